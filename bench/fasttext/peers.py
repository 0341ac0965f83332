#!/usr/bin/env python3
"""The peers of pretext's fastText benchmark: gensim's FastText and Debian's `fasttext` program.

  peers.py gensim-train CORPUS OUT_PREFIX --sg 1 --dim 100 --window 5 --negative 5 --sample 1e-3
           --min-count 5 --epochs 5 --workers 2 --min-n 3 --max-n 6 --bucket 2000000
           [--mode corpus_file|lines]
      trains gensim's FastText, writes OUT_PREFIX.vec (the vocabulary's vectors, word2vec text)
      and OUT_PREFIX.model (gensim's own format, n-gram buckets included); prints one JSON line
      with timings and raw words per second.
  peers.py gensim-vectors OUT_PREFIX.model < WORDS
      prints 'word v1 v2 ...' for each word on stdin (as fastText's print-word-vectors).
  peers.py oov PAIRS VOCAB.vec -- COMMAND...
      scores the vectors a model makes for words outside its vocabulary, by the same code for
      every tool (COMMAND prints the vectors of the words on its stdin): WordSim-353 pairs
      inside the vocabulary, pairs with a word outside it, all pairs; and misspelt words (the
      middle letter of mid-frequency words dropped): is the intended word the nearest
      vocabulary word, or among the 10 nearest? Prints one JSON line.
"""
import argparse
import json
import subprocess
import sys
import time


def gensim_train(a):
    from gensim.models import FastText
    from gensim.models.word2vec import LineSentence

    m = FastText(sg=a.sg, vector_size=a.dim, window=a.window, negative=a.negative, sample=a.sample,
                 min_count=a.min_count, epochs=a.epochs, workers=a.workers, seed=a.seed, alpha=0.025,
                 min_alpha=0.0001, min_n=a.min_n, max_n=a.max_n, bucket=a.bucket)
    t0 = time.perf_counter()
    if a.mode == "corpus_file":
        m.build_vocab(corpus_file=a.corpus)
    else:
        m.build_vocab(LineSentence(a.corpus))
    t1 = time.perf_counter()
    if a.mode == "corpus_file":
        m.train(corpus_file=a.corpus, total_examples=m.corpus_count,
                total_words=m.corpus_total_words, epochs=a.epochs)
    else:
        m.train(LineSentence(a.corpus), total_examples=m.corpus_count, epochs=a.epochs)
    t2 = time.perf_counter()
    m.wv.save_word2vec_format(a.out + ".vec", binary=False)
    m.save(a.out + ".model")
    t3 = time.perf_counter()
    raw = m.corpus_total_words * a.epochs
    print(json.dumps({"tool": "gensim", "mode": a.mode, "vocab": len(m.wv),
                      "corpus_words": m.corpus_total_words,
                      "seconds": {"vocab": t1 - t0, "train": t2 - t1, "save": t3 - t2,
                                  "total": t3 - t0},
                      "raw_words_per_sec": raw / (t2 - t1)}))


def gensim_vectors(a):
    """Vectors of the words on stdin, one 'word v1 v2 ...' line each (as print-word-vectors)."""
    from gensim.models import FastText

    wv = FastText.load(a.model).wv
    for line in sys.stdin:
        w = line.strip()
        if w:
            print(w, " ".join(repr(float(x)) for x in wv[w]))


def read_pairs(path):
    pairs = []
    for i, line in enumerate(open(path, encoding="utf8")):
        t = line.strip()
        if not t or t.startswith("#"):
            continue
        f = [x.strip() for x in t.split("\t")] if "\t" in t else t.split()
        try:
            pairs.append((f[0], f[1], float(f[2])))
        except (IndexError, ValueError):
            if pairs:
                raise SystemExit(f"{path}: line {i + 1}: expected 'word1 word2 score'")
    return pairs


def read_vec(path):
    import numpy as np

    words, rows = [], []
    with open(path, encoding="utf8", errors="replace") as f:
        f.readline()
        for line in f:
            p = line.rstrip().split(" ")
            words.append(p[0])
            rows.append(np.array(p[1:], dtype=np.float32))
    return words, np.vstack(rows)


def spearman(x, y):
    from scipy.stats import spearmanr
    return float(spearmanr(x, y).correlation) if len(x) > 1 else float("nan")


def typos(words, count):
    """Deterministic misspellings of mid-frequency words: the middle letter dropped, kept where
    the result is no vocabulary word."""
    vocab = set(words)
    out = []
    for w in words[1000:]:
        if len(w) >= 6 and w.isalpha() and w.islower():
            t = w[: len(w) // 2] + w[len(w) // 2 + 1:]
            if t not in vocab:
                out.append((t, w))
        if len(out) == count:
            break
    return out


def oov(a):
    """Scores a model's vectors for words outside its vocabulary, by the same code for every tool:
    WordSim-353 (pairs inside the vocabulary, pairs with a word outside it, all pairs; words
    matched case-insensitively as gensim's evaluate_word_pairs) and the recovery of misspelt
    words (is the intended word the nearest vocabulary word, or among the 10 nearest?)."""
    import numpy as np

    words, emb = read_vec(a.vec)
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    pairs = read_pairs(a.pairs)
    misspelt = typos(words, a.typos)
    queries = sorted({w for p in pairs for w in p[:2]} | {t for t, _ in misspelt})
    out = subprocess.run(a.command, input="\n".join(queries) + "\n", capture_output=True, text=True,
                         check=True).stdout
    table = {}
    for line in out.splitlines():
        f = line.rstrip().split(" ")
        table[f[0]] = np.array(f[1:], dtype=np.float32)
    ok = {}
    for i in reversed(range(min(len(words), 300000))):
        ok[words[i].upper()] = i
    vector = lambda w: emb[ok[w.upper()]] if w.upper() in ok else table[w]
    cos = lambda x, y: float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
    gold, scores, oov_gold, oov_scores = [], [], [], []
    for w1, w2, s in pairs:
        inside = w1.upper() in ok and w2.upper() in ok
        (gold if inside else oov_gold).append(s)
        (scores if inside else oov_scores).append(cos(vector(w1), vector(w2)))
    index = {w: i for i, w in enumerate(words)}
    top1 = top10 = 0
    for t, w in misspelt:
        q = table[t] / np.linalg.norm(table[t])
        best = np.argsort(-(unit @ q))[:10]
        top1 += int(best[0] == index[w])
        top10 += int(index[w] in best)
    print(json.dumps({"pairs": len(pairs), "in_vocab_pairs": len(gold),
                      "spearman": spearman(gold, scores),
                      "oov_pairs": len(oov_gold), "oov_spearman": spearman(oov_gold, oov_scores),
                      "all_spearman": spearman(gold + oov_gold, scores + oov_scores),
                      "typos": len(misspelt), "typo_top1": top1 / max(len(misspelt), 1),
                      "typo_top10": top10 / max(len(misspelt), 1)}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("gensim-train")
    t.add_argument("corpus")
    t.add_argument("out")
    for name, default in [("--sg", 1), ("--dim", 100), ("--window", 5), ("--negative", 5),
                          ("--min-count", 5), ("--epochs", 5), ("--workers", 2), ("--seed", 1),
                          ("--min-n", 3), ("--max-n", 6), ("--bucket", 2000000)]:
        t.add_argument(name, type=int, default=default)
    t.add_argument("--sample", type=float, default=1e-3)
    t.add_argument("--mode", choices=["lines", "corpus_file"], default="corpus_file")
    g = sub.add_parser("gensim-vectors")
    g.add_argument("model")
    o = sub.add_parser("oov")
    o.add_argument("pairs")
    o.add_argument("vec", help="the vocabulary's vectors (.vec) of the model")
    o.add_argument("--typos", type=int, default=2000)
    o.add_argument("command", nargs=argparse.REMAINDER,
                   help="after --: a command printing 'word v1 v2 ...' for each word on stdin")
    a = p.parse_args()
    if a.cmd == "oov" and a.command[:1] == ["--"]:
        a.command = a.command[1:]
    {"gensim-train": gensim_train, "gensim-vectors": gensim_vectors, "oov": oov}[a.cmd](a)


if __name__ == "__main__":
    main()
