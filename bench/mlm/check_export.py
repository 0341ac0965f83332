"""Check a pretext masked-language-model export against Hugging Face transformers.

Usage: check_export.py HF_DIR LOGITS_JSON [--tol 1e-4] [--fill-mask TEXT]

HF_DIR is what `pretext export --format hf` wrote; LOGITS_JSON is what `pretext mlm logits`
wrote: {"sentences": [...], "input_ids": [[...], ...], "logits": [[[vocab floats] per token]
per sentence]}. The script loads the folder with AutoModelForMaskedLM / AutoTokenizer and
checks that

  * every weight loads (no missing, unexpected or mis-shaped tensor),
  * the tokenizer gives pretext's input_ids for every sentence,
  * logits agree with pretext's within --tol, per sentence on its own and as one padded batch.

It exits 1 when a check fails, and prints a fill-mask pipeline result for show.
"""

import argparse
import json
import sys

import torch
import transformers
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("logits_json")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument(
        "--fill-mask",
        default="the quick brown {mask} jumps over the lazy dog.",
        help="text for the fill-mask demo; {mask} becomes the mask token",
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    with open(args.logits_json) as f:
        ref = json.load(f)
    sentences, ref_ids, ref_logits = ref["sentences"], ref["input_ids"], ref["logits"]
    if not (len(sentences) == len(ref_ids) == len(ref_logits)) or not sentences:
        print(f"{args.logits_json}: sentences, input_ids and logits differ in length or are empty")
        return 1
    failures = []

    tok = AutoTokenizer.from_pretrained(args.hf_dir)
    print(
        f"tokenizer: {type(tok).__name__} (fast: {tok.is_fast}), "
        f"mask {tok.mask_token!r} {tok.mask_token_id}, pad {tok.pad_token!r} {tok.pad_token_id}, "
        f"cls {tok.cls_token!r}, sep {tok.sep_token!r}, unk {tok.unk_token!r}, "
        f"model_max_length {tok.model_max_length}"
    )
    if not tok.is_fast:
        failures.append("tokenizer is not a fast (tokenizers-backed) one")
    for role in ["mask", "pad", "cls", "sep", "unk"]:
        if getattr(tok, f"{role}_token_id") is None:
            failures.append(f"tokenizer has no {role} token")

    model, info = AutoModelForMaskedLM.from_pretrained(args.hf_dir, output_loading_info=True)
    model.eval()
    print(f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters")
    for kind in ["missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"]:
        found = list(info.get(kind) or [])
        if found:
            failures.append(f"loading the weights: {kind} {found}")
    if tok.pad_token_id != model.config.pad_token_id:
        failures.append(
            f"tokenizer pad id {tok.pad_token_id} != config pad_token_id {model.config.pad_token_id}"
        )

    overall = 0.0
    with torch.no_grad():
        for i, (text, ids, logits) in enumerate(zip(sentences, ref_ids, ref_logits)):
            got = tok(text)["input_ids"]
            if got != ids:
                failures.append(f"sentence {i}: tokenizer ids differ")
                print(f"  sentence {i}: ids differ\n    pretext      {ids}\n    transformers {got}")
            # pretext's ids, so a tokenizer difference does not hide a model difference.
            out = model(input_ids=torch.tensor([ids])).logits[0]
            want = torch.tensor(logits, dtype=torch.float32)[: len(ids)]
            if want.shape != out.shape:
                failures.append(f"sentence {i}: logits {tuple(want.shape)} vs {tuple(out.shape)}")
                continue
            diff = (out - want).abs().max().item()
            overall = max(overall, diff)
            print(f"  sentence {i}: {len(ids)} tokens, max |logit diff| {diff:.3e}  {text!r}")

        # The same sentences as one padded batch (padding on the right, attention mask).
        batch = tok(sentences, padding=True, return_tensors="pt")
        out = model(**batch).logits
        batch_diff = 0.0
        for i, (ids, logits) in enumerate(zip(ref_ids, ref_logits)):
            n = len(ids)
            if batch["input_ids"][i, :n].tolist() != ids:
                continue
            want = torch.tensor(logits, dtype=torch.float32)[:n]
            batch_diff = max(batch_diff, (out[i, :n] - want).abs().max().item())
        print(f"  padded batch of {len(sentences)}: max |logit diff| {batch_diff:.3e}")

    print(f"overall max |logit diff| {overall:.3e} (tolerance {args.tol:g})")
    if overall > args.tol:
        failures.append(f"logits differ by {overall:.3e} > {args.tol:g}")
    if batch_diff > args.tol:
        failures.append(f"padded-batch logits differ by {batch_diff:.3e} > {args.tol:g}")

    text = args.fill_mask.replace("{mask}", tok.mask_token)
    if tok.mask_token in text:
        fill = pipeline("fill-mask", model=model, tokenizer=tok, device=-1)
        print(f"fill-mask {text!r}:")
        for r in fill(text, top_k=5):
            print(f"  {r['score']:.4f}  {r['token_str']!r}")

    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK: transformers reproduces pretext's tokenizer and logits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
