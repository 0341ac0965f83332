#!/usr/bin/env python3
"""gensim side of the Word2Vec benchmark.

  gensim_w2v.py train CORPUS OUT.bin --sg 1 --dim 100 --window 5 --negative 5 --sample 1e-3
                --min-count 5 --epochs 5 --workers 2 [--mode lines|corpus_file]
      trains gensim's Word2Vec and writes word2vec binary vectors; prints one JSON line with
      timings (vocabulary pass, training) and raw words per second.
  gensim_w2v.py eval VECTORS [--binary 0|1] --analogies questions-words.txt --pairs wordsim353.tsv
      loads any word2vec file with KeyedVectors.load_word2vec_format and prints one JSON line with
      evaluate_word_analogies(restrict_vocab=30000) and evaluate_word_pairs (gensim defaults).
"""
import argparse
import json
import logging
import sys
import time


def train(a):
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    m = Word2Vec(sg=a.sg, vector_size=a.dim, window=a.window, negative=a.negative, hs=a.hs,
                 sample=a.sample, min_count=a.min_count, epochs=a.epochs, workers=a.workers,
                 seed=a.seed, alpha=0.025, min_alpha=0.0001, cbow_mean=1)
    t0 = time.perf_counter()
    if a.mode == "corpus_file":
        m.build_vocab(corpus_file=a.corpus)
    else:
        m.build_vocab(LineSentence(a.corpus))
    t1 = time.perf_counter()
    if a.mode == "corpus_file":
        m.train(corpus_file=a.corpus, total_examples=m.corpus_count, total_words=m.corpus_total_words,
                epochs=a.epochs)
    else:
        m.train(LineSentence(a.corpus), total_examples=m.corpus_count, epochs=a.epochs)
    t2 = time.perf_counter()
    m.wv.save_word2vec_format(a.out, binary=True)
    t3 = time.perf_counter()
    raw = m.corpus_total_words * a.epochs
    print(json.dumps({"tool": "gensim", "mode": a.mode, "vocab": len(m.wv), "corpus_words": m.corpus_total_words,
                      "seconds": {"vocab": t1 - t0, "train": t2 - t1, "save": t3 - t2, "total": t3 - t0},
                      "raw_words_per_sec": raw / (t2 - t1)}))


def evaluate(a):
    from gensim.models import KeyedVectors

    binary = a.binary
    if binary is None:  # detect like pretext: text if the first row parses as word + floats
        with open(a.vectors, "rb") as f:
            f.readline()
            row = f.readline()
        try:
            parts = row.decode("utf8").split()
            [float(x) for x in parts[1:]]
            binary = 0 if len(parts) > 2 else 1
        except (UnicodeDecodeError, ValueError):
            binary = 1
    t0 = time.perf_counter()
    kv = KeyedVectors.load_word2vec_format(a.vectors, binary=bool(binary))
    t1 = time.perf_counter()
    out = {"tool": "gensim-eval", "vectors": a.vectors, "binary": bool(binary), "words": len(kv),
           "load_seconds": t1 - t0}
    if a.analogies:
        score, sections = kv.evaluate_word_analogies(a.analogies, restrict_vocab=30000)
        out["analogy_accuracy"] = score
        out["analogy_sections"] = {s["section"]: [len(s["correct"]), len(s["correct"]) + len(s["incorrect"])]
                                   for s in sections}
    if a.pairs:
        pearson, spearman, oov = kv.evaluate_word_pairs(a.pairs)
        out["spearman"] = float(spearman[0])
        out["pearson"] = float(pearson[0])
        out["pairs_oov_percent"] = oov
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("corpus")
    t.add_argument("out")
    t.add_argument("--sg", type=int, default=1)
    t.add_argument("--dim", type=int, default=100)
    t.add_argument("--window", type=int, default=5)
    t.add_argument("--negative", type=int, default=5)
    t.add_argument("--hs", type=int, default=0)
    t.add_argument("--sample", type=float, default=1e-3)
    t.add_argument("--min-count", type=int, default=5)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--mode", choices=["lines", "corpus_file"], default="lines")
    e = sub.add_parser("eval")
    e.add_argument("vectors")
    e.add_argument("--binary", type=int, default=None)
    e.add_argument("--analogies")
    e.add_argument("--pairs")
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    train(a) if a.cmd == "train" else evaluate(a)


if __name__ == "__main__":
    main()
