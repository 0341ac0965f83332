# Sourced by the Word2Vec and fastText benchmarks. `round_trip` prints the round trip of one
# cache line between two CPUs in ns (core_to_core.c), or "-" without gcc or a second CPU: it
# tells where the host put the two vCPUs, which moves two-thread speed by up to 2x
# (docs/word2vec.md, "vCPU placement").
PROBE=${TMPDIR:-/tmp}/pretext_core_to_core
if [ "$(nproc)" -gt 1 ] && command -v gcc > /dev/null; then
  gcc -O2 -pthread "$(dirname "${BASH_SOURCE[0]}")/core_to_core.c" -o "$PROBE"
else
  PROBE=
fi
round_trip() { if [ -n "$PROBE" ]; then "$PROBE" | awk '{print $3}'; else echo -; fi; }
