"""Check a pretext ELECTRA export against Hugging Face transformers.

Usage: check_export.py HF_DIR LOGITS_JSON [--tol 1e-4]

HF_DIR is what `pretext export --format hf` wrote for an ELECTRA run (HF_DIR/discriminator,
HF_DIR/generator); LOGITS_JSON is what `pretext electra logits` wrote: {"sentences", "input_ids",
"discriminator": [[logit per token]], "generator": [[[vocab floats] per token]]}. The script
loads ElectraForPreTraining and ElectraForMaskedLM with their tokenizers and checks that every
weight loads, the tokenizers give pretext's ids, and both networks' logits agree with pretext's
within --tol. It exits 1 when a check fails.
"""

import argparse
import json
import sys

import torch
import transformers
from transformers import AutoTokenizer, ElectraForMaskedLM, ElectraForPreTraining


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("logits_json")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    with open(args.logits_json) as f:
        ref = json.load(f)
    ok = True
    for net, cls, key in [
        ("discriminator", ElectraForPreTraining, "discriminator"),
        ("generator", ElectraForMaskedLM, "generator"),
    ]:
        path = f"{args.hf_dir}/{net}"
        model, info = cls.from_pretrained(path, output_loading_info=True)
        model.eval()
        problems = {k: v for k, v in info.items() if v}
        if problems:
            print(f"{net}: loading problems: {problems}")
            ok = False
        tok = AutoTokenizer.from_pretrained(path)
        worst = 0.0
        for sentence, ids, expected in zip(ref["sentences"], ref["input_ids"], ref[key]):
            got_ids = tok(sentence)["input_ids"]
            if got_ids != ids:
                print(f"{net}: tokenizer ids differ for {sentence!r}: {got_ids} vs {ids}")
                ok = False
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0]
            diff = (logits - torch.tensor(expected)).abs().max().item()
            worst = max(worst, diff)
        print(f"{net} ({cls.__name__}): max |logit difference| {worst:.2e} over "
              f"{len(ref['sentences'])} sentences")
        ok &= worst <= args.tol
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
