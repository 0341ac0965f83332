#!/usr/bin/env python3
"""Builds the markdown table of bench/word2vec/run.sh from the files in its output directory.

Files are named TOOL-ARCH-sSEED.{train.json,time,eval-pretext.json,eval-gensim.json}; every
number in the table is the mean over the seeds (± the standard deviation for the scores).
"""
import collections
import glob
import json
import os
import re
import statistics
import sys

out = sys.argv[1]


def load(path):
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def gnu_time(path):
    text = open(path).read()
    wall = re.search(r"Elapsed \(wall clock\) time.*: (.*)", text).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    return secs, rss_kb / 1024


runs = collections.defaultdict(list)
for p in glob.glob(f"{out}/*.train.json"):
    name = os.path.basename(p)[: -len(".train.json")]
    tool, arch, seed = name.rsplit("-", 2)
    wall, rss = gnu_time(f"{out}/{name}.time")
    tr = load(p)
    ep = load(f"{out}/{name}.eval-pretext.json")
    eg = load(f"{out}/{name}.eval-gensim.json")
    runs[(arch, tool)].append({
        "wall": wall, "rss": rss, "train": tr["seconds"]["train"], "wps": tr["raw_words_per_sec"],
        "acc_p": 100 * ep["analogies"]["accuracy"], "acc_g": 100 * eg["analogy_accuracy"],
        "rho_p": ep["similarity"]["spearman"], "rho_g": eg["spearman"],
        "placement": open(f"{out}/{name}.placement").read().split()
        if os.path.exists(f"{out}/{name}.placement") else ["-", "-"],
    })


def mean(rs, k):
    return statistics.mean(r[k] for r in rs)


def pm(rs, k, fmt):
    m = mean(rs, k)
    if len(rs) < 2:
        return fmt.format(m)
    return (fmt + " ± " + fmt).format(m, statistics.stdev(r[k] for r in rs))


names = {"pretext": "pretext", "pretext_shared": "pretext --shared-negatives", "gensim_lines": "gensim (LineSentence)", "gensim_corpus_file": "gensim (corpus_file)"}
head = ["model", "tool", "seeds", "wall s", "train s", "raw words/s", "vs best gensim", "peak RSS MiB",
        "analogy % (pretext eval)", "analogy % (gensim eval)", "WS353 ρ (pretext eval)", "WS353 ρ (gensim eval)",
        "vCPU round trip ns, before/after"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for arch in ["sg", "cbow"]:
    tools = sorted((t for a, t in runs if a == arch), key=lambda t: (not t.startswith("pretext"), t))
    best = max((mean(runs[(arch, t)], "wps") for t in tools if t.startswith("gensim")), default=None)
    for t in tools:
        rs = runs[(arch, t)]
        wps = mean(rs, "wps")
        print("| " + " | ".join([
            "skip-gram" if arch == "sg" else "CBOW", names.get(t, t), str(len(rs)),
            f"{mean(rs, 'wall'):.1f}", f"{mean(rs, 'train'):.1f}", f"{wps / 1e3:,.0f}k",
            f"{wps / best:.2f}x" if best else "-", f"{mean(rs, 'rss'):,.0f}",
            pm(rs, "acc_p", "{:.2f}"), pm(rs, "acc_g", "{:.2f}"),
            pm(rs, "rho_p", "{:.3f}"), pm(rs, "rho_g", "{:.3f}"),
            ", ".join("/".join(r["placement"]) for r in rs),
        ]) + " |")
machine = os.path.join(out, "machine.txt")
if os.path.exists(machine):
    print()
    for line in open(machine):
        print("- " + line.strip())
