#!/usr/bin/env python3
"""Mean ± std over seeds of every arm and fraction in a label study's journal
(RUN/labels.runs.jsonl), as a Markdown table; useful when a study was run in parts
(`--arms`, `--fractions`, `--seeds`), which all add to one journal.
  python3 bench/labels/journal_table.py RUN/labels.runs.jsonl"""
import json, statistics as st, sys

lines = open(sys.argv[1]).read().splitlines()[1:]
runs = [json.loads(l) for l in lines if l.strip()]
arms = list(dict.fromkeys(r["arm"] for r in runs))
fractions = sorted({r["fraction"] for r in runs})
print("| arm | " + " | ".join(f"{100*f:g}%" for f in fractions) + " |")
print("|---|" + "---|" * len(fractions))
for arm in arms:
    cells = []
    for f in fractions:
        acc = [r["accuracy"] for r in runs if r["arm"] == arm and r["fraction"] == f]
        if not acc:
            cells.append("")
            continue
        sd = st.stdev(acc) if len(acc) > 1 else 0.0
        seeds = "" if len(acc) == 3 else f" ({len(acc)} seed{'s' if len(acc) > 1 else ''})"
        cells.append(f"{100*st.mean(acc):.2f} ± {100*sd:.2f}%{seeds}")
    print(f"| {arm} | " + " | ".join(cells) + " |")
rates = [(r["fraction"], r["detail"].get("pseudo_label_rate"), r["detail"].get("pseudo_label_accuracy"))
         for r in runs if r["arm"].startswith("fixmatch")]
for arm in [a for a in arms if a.startswith("fixmatch")]:
    for f in fractions:
        d = [r["detail"] for r in runs if r["arm"] == arm and r["fraction"] == f]
        if d and d[0].get("pseudo_label_rate") is not None:
            rate = st.mean(x["pseudo_label_rate"] for x in d)
            right = st.mean(x.get("pseudo_label_accuracy") or 0 for x in d)
            print(f"\n{arm} at {100*f:g}%: {100*rate:.1f}% of unlabelled views confident, {100*right:.1f}% of those right", end="")
print()
