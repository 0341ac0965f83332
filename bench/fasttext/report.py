#!/usr/bin/env python3
"""Table of bench/fasttext/run.sh's results: mean over seeds per (tool, architecture).

Training speed is corpus words x epochs over the training time: pretext and gensim time their
training loop; Debian's fastText program reports words/sec/thread over its own tokens, which
count one end-of-line token per line, so its rate is scaled by words / (words + lines).
"""
import glob
import json
import os
import re
import sys
from collections import defaultdict
from statistics import mean


def time_file(path):
    text = open(path).read()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return secs, rss / 1024


def main(out):
    machine = open(os.path.join(out, "machine.txt")).read()
    words = int(re.search(r"\((\d+) words, (\d+) lines\)", machine).group(1))
    lines = int(re.search(r"\((\d+) words, (\d+) lines\)", machine).group(2))
    threads = int(re.search(r"threads (\d+)", machine).group(1))
    rows = defaultdict(lambda: defaultdict(list))
    for path in sorted(glob.glob(os.path.join(out, "*.eval.json"))):
        run = path[: -len(".eval.json")]
        tool, arch, _seed = os.path.basename(run).rsplit("-", 2)
        r = rows[(tool, arch)]
        if tool == "fasttext":
            line = open(run + ".train.txt").read()
            per_thread = float(re.search(r"words/sec/thread:\s*(\d+)", line).group(1))
            r["speed"].append(per_thread * threads * words / (words + lines))
        else:
            r["speed"].append(json.load(open(run + ".train.json"))["raw_words_per_sec"])
        wall, rss = time_file(run + ".time")
        r["wall"].append(wall)
        r["rss"].append(rss)
        ev = json.load(open(path))
        r["analogy"].append(100 * ev["analogies"]["accuracy"])
        r["ws"].append(ev["similarity"]["spearman"])
        oov = json.load(open(run + ".oov.json"))
        r["ws_all"].append(oov["all_spearman"])
        r["ws_oov"].append(oov["oov_spearman"])
        r["oov_pairs"].append(oov["oov_pairs"])
        r["top1"].append(100 * oov["typo_top1"])
        r["top10"].append(100 * oov["typo_top10"])
        r["typos"].append(oov["typos"])
        placement = run + ".placement"
        r["placement"].append(
            "/".join(open(placement).read().split()) if os.path.exists(placement) else "-")
    print("\n".join("    " + l for l in machine.strip().splitlines()))
    print()
    print("| arch | tool | seeds | words/s (training) | vs gensim | whole run | peak RSS | analogy | WS353 ρ | WS353 ρ, all pairs | ρ on OOV pairs | misspelt: top-1 / top-10 | vCPU round trip ns, before/after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for arch in ("sg", "cbow"):
        base = rows.get(("gensim", arch), {}).get("speed")
        for tool in ("pretext", "gensim", "fasttext"):
            r = rows.get((tool, arch))
            if not r:
                continue
            speed = mean(r["speed"])
            ratio = f"{speed / mean(base):.2f}x" if base else "-"
            print(f"| {arch} | {tool} | {len(r['speed'])} | {speed / 1e3:,.0f}k | {ratio} | "
                  f"{mean(r['wall']):.1f} s | {mean(r['rss']):,.0f} MB | {mean(r['analogy']):.2f}% | "
                  f"{mean(r['ws']):.3f} | {mean(r['ws_all']):.3f} | {mean(r['ws_oov']):.3f} "
                  f"({r['oov_pairs'][0]}) | {mean(r['top1']):.1f}% / {mean(r['top10']):.1f}% "
                  f"(of {r['typos'][0]}) | {', '.join(r['placement'])} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/bench-fasttext")
