#!/usr/bin/env python3
"""The peers of pretext's fastText benchmark: gensim's FastText and Debian's `fasttext` program.

  peers.py gensim-train CORPUS OUT_PREFIX --sg 1 --dim 100 --window 5 --negative 5 --sample 1e-3
           --min-count 5 --epochs 5 --workers 2 --min-n 3 --max-n 6 --bucket 2000000
           [--mode corpus_file|lines]
      trains gensim's FastText, writes OUT_PREFIX.vec (the vocabulary's vectors, word2vec text)
      and OUT_PREFIX.model (gensim's own format, n-gram buckets included); prints one JSON line
      with timings and raw words per second.
  peers.py oov PAIRS (--gensim OUT_PREFIX.model | --fasttext-bin MODEL.bin FASTTEXT_PROGRAM)
      scores WordSim-353 as `pretext fasttext eval` does: pairs whose words are both in the
      vocabulary (case-insensitively, as gensim's evaluate_word_pairs) on their own, then the
      other pairs with n-gram vectors for the words outside it; prints one JSON line.
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


def spearman(x, y):
    from scipy.stats import spearmanr
    return float(spearmanr(x, y).correlation) if len(x) > 1 else float("nan")


def oov(a):
    import numpy as np

    pairs = read_pairs(a.pairs)
    if a.gensim:
        from gensim.models import FastText
        wv = FastText.load(a.gensim).wv
        vocab = list(wv.index_to_key)
        vector = lambda w: wv[w]  # n-gram vectors for words outside the vocabulary
    else:
        model, program = a.fasttext_bin
        words = sorted({w for p in pairs for w in p[:2]})
        out = subprocess.run([program, "print-word-vectors", model], input="\n".join(words) + "\n",
                             capture_output=True, text=True, check=True).stdout
        table = {}
        for line in out.splitlines():
            f = line.rstrip().split(" ")
            table[f[0]] = np.array([float(x) for x in f[1:]], dtype=np.float32)
        vec_file = model[:-4] + ".vec"
        with open(vec_file, encoding="utf8") as f:
            f.readline()
            vocab = [line.split(" ", 1)[0] for line in f]
        vector = lambda w: table[w]
    ok = {}
    for w in reversed(vocab[:300000]):
        ok[w.upper()] = w
    cos = lambda x, y: float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
    gold, model_scores, oov_gold, oov_scores = [], [], [], []
    for w1, w2, s in pairs:
        k1, k2 = ok.get(w1.upper()), ok.get(w2.upper())
        if k1 and k2:
            gold.append(s)
            model_scores.append(cos(vector(k1), vector(k2)))
        else:
            oov_gold.append(s)
            oov_scores.append(cos(vector(k1 or w1), vector(k2 or w2)))
    print(json.dumps({"pairs": len(pairs), "in_vocab_pairs": len(gold),
                      "spearman": spearman(gold, model_scores),
                      "oov_pairs": len(oov_gold), "oov_spearman": spearman(oov_gold, oov_scores),
                      "all_spearman": spearman(gold + oov_gold, model_scores + oov_scores)}))


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
    o = sub.add_parser("oov")
    o.add_argument("pairs")
    o.add_argument("--gensim")
    o.add_argument("--fasttext-bin", nargs=2, metavar=("MODEL_BIN", "PROGRAM"))
    a = p.parse_args()
    gensim_train(a) if a.cmd == "gensim-train" else oov(a)


if __name__ == "__main__":
    main()
