#!/usr/bin/env python3
"""Builds the markdown table of bench/word2vec/run.sh from the files in its output directory."""
import glob
import json
import os
import re
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


rows = []
for arch in ["sg", "cbow"]:
    runs = sorted(glob.glob(f"{out}/*-{arch}.train.json"), key=lambda p: (not os.path.basename(p).startswith("pretext"), p))
    base = None
    gensim_best = max((load(p)["raw_words_per_sec"] for p in runs if "gensim" in p), default=None)
    for p in runs:
        name = os.path.basename(p)[: -len(".train.json")]
        tr = load(p)
        wall, rss = gnu_time(f"{out}/{name}.time")
        ep = load(f"{out}/{name}.eval-pretext.json")
        eg = load(f"{out}/{name}.eval-gensim.json")
        tool = "pretext" if name.startswith("pretext") else "gensim " + ("LineSentence" if "-lines-" in name else "corpus_file")
        wps = tr["raw_words_per_sec"]
        rows.append([
            "skip-gram" if arch == "sg" else "CBOW", tool,
            f"{wall:.1f}", f"{tr['seconds']['train']:.1f}", f"{wps / 1e3:,.0f}k",
            f"{wps / gensim_best:.2f}x" if gensim_best else "-",
            f"{rss:,.0f}",
            f"{100 * ep['analogies']['accuracy']:.2f}", f"{100 * eg['analogy_accuracy']:.2f}",
            f"{ep['similarity']['spearman']:.4f}", f"{eg['spearman']:.4f}",
        ])

head = ["model", "tool", "wall s", "train s", "raw words/s", "vs best gensim", "peak RSS MiB",
        "analogy % (pretext eval)", "analogy % (gensim eval)", "WS353 ρ (pretext eval)", "WS353 ρ (gensim eval)"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
machine = os.path.join(out, "machine.txt")
if os.path.exists(machine):
    print()
    for line in open(machine):
        print("- " + line.strip())
