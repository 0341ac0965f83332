// Core-to-core round trip: two threads pinned to CPUs 0 and 1 hand one cache line back and
// forth. On a VM it tells where the host has put the two vCPUs at this moment (sharing an L3
// or not), which is what Hogwild training's shared rows pay for (docs/word2vec.md).
//   gcc -O2 -pthread bench/word2vec/core_to_core.c -o core_to_core && ./core_to_core
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

static _Alignas(64) atomic_int flag;
enum { ROUNDS = 2000000 };

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *answer(void *unused) {
  (void)unused;
  pin(1);
  for (int i = 0; i < ROUNDS; i++) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {
    }
    atomic_store_explicit(&flag, 0, memory_order_release);
  }
  return NULL;
}

int main(void) {
  pthread_t other;
  pthread_create(&other, NULL, answer, NULL);
  pin(0);
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int i = 0; i < ROUNDS; i++) {
    atomic_store_explicit(&flag, 1, memory_order_release);
    while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &end);
  pthread_join(other, NULL);
  double ns = ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / ROUNDS;
  printf("round trip %.1f ns\n", ns);
  return 0;
}
