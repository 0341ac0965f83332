"""Masked-language-model pretraining with Hugging Face transformers (PyTorch, CPU), set up as
pretext's `mlm train` runs it, for a side-by-side benchmark (bench/mlm/run.sh).

Same tokenizer (pretext's tokenizer.json), same examples (lines split into training and
held-out lines as pretext does: every `holdout_every`-th non-empty line held out; blocks of
max_len - 2 tokens framed by [CLS] ... [SEP], packed per 1,000-line chunk), same model (BERT,
post-LN, GELU, tied decoder), same masking (15%, 80/10/10, dynamic), same optimizer (AdamW, no
decay on biases and LayerNorm weights, linear warm-up and decay, gradient norm clipped to 1),
same batch size and steps. Prints one JSON object.

With --norm pre --dropout 0 --mlm-probability 0.4 --lr 1e-3 --beta2 0.98 --eps 1e-12
--grad-clip 0.5 it runs pretext's small-compute recipe (configs/mlm_recipe.toml) instead, on
RobertaPreLayerNormForMaskedLM, the class pretext exports pre-norm encoders as. The held-out
score masks 15% either way, as pretext's `eval.mask_probability` does.
"""

import argparse
import json
import math
import time

import torch
import transformers
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    RobertaPreLayerNormConfig,
    RobertaPreLayerNormForMaskedLM,
    PreTrainedTokenizerFast,
    get_linear_schedule_with_warmup,
)


def read_lines(path, holdout_every):
    train, heldout = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        i = 0
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            i += 1
            if holdout_every > 0 and i % holdout_every == 0:
                heldout.append(line)
            else:
                train.append(line)
    return train, heldout


def packed_blocks(tok, lines, max_len, chunk=1000):
    body = max_len - 2
    blocks = []
    for start in range(0, len(lines), chunk):
        enc = tok(lines[start : start + chunk], add_special_tokens=False)["input_ids"]
        stream = [t for ids in enc for t in ids]
        for b in range(0, len(stream) - body + 1, body):
            blocks.append([tok.cls_token_id] + stream[b : b + body] + [tok.sep_token_id])
    return blocks


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--holdout-every", type=int, default=100)
    p.add_argument("--eval-sequences", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norm", choices=["post", "pre"], default="post")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--grad-clip", type=float, default=1.0)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    tok = PreTrainedTokenizerFast(
        tokenizer_file=a.tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    t0 = time.perf_counter()
    train_lines, heldout_lines = read_lines(a.corpus, a.holdout_every)
    train = packed_blocks(tok, train_lines, a.max_len)
    heldout = packed_blocks(tok, heldout_lines, a.max_len)[: a.eval_sequences]
    tokenize_secs = time.perf_counter() - t0

    sizes = dict(
        vocab_size=len(tok),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=a.dropout,
        attention_probs_dropout_prob=a.dropout,
        pad_token_id=tok.pad_token_id,
    )
    if a.norm == "pre":
        # Positions count from pad_token_id + 1, as pretext's export lays them out.
        config = RobertaPreLayerNormConfig(max_position_embeddings=512 + tok.pad_token_id + 1, **sizes)
        model = RobertaPreLayerNormForMaskedLM(config)
    else:
        config = BertConfig(max_position_embeddings=512, **sizes)
        model = BertForMaskedLM(config)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": 0.01,
        },
        {
            "params": [p for n, p in model.named_parameters() if n.endswith(no_decay)],
            "weight_decay": 0.0,
        },
    ]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, a.beta2), eps=a.eps)
    sched = get_linear_schedule_with_warmup(opt, a.warmup, a.steps)
    collator = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=a.mlm_probability)
    scoring = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15)

    gen = torch.Generator().manual_seed(a.seed)
    order = []
    losses = []
    timing = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    model.train()
    tokens = 0
    start = time.perf_counter()
    for step in range(a.steps):
        t = time.perf_counter()
        if len(order) < a.batch_size:
            order = torch.randperm(len(train), generator=gen).tolist()
        idx, order = order[: a.batch_size], order[a.batch_size :]
        batch = collator([{"input_ids": train[i]} for i in idx])
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        t1 = time.perf_counter()
        out = model(input_ids=batch["input_ids"], labels=batch["labels"])
        t2 = time.perf_counter()
        out.loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        timing["data"] += t1 - t
        timing["forward"] += t2 - t1
        timing["backward"] += t3 - t2
        timing["optimizer"] += t4 - t3
        losses.append(out.loss.item())
    train_secs = time.perf_counter() - start

    model.eval()
    torch.manual_seed(12345)
    nll, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, len(heldout), a.batch_size):
            batch = scoring([{"input_ids": x} for x in heldout[s : s + a.batch_size]])
            logits = model(input_ids=batch["input_ids"]).logits
            mask = batch["labels"] != -100
            lp = torch.log_softmax(logits[mask], dim=-1)
            target = batch["labels"][mask]
            nll -= lp.gather(1, target[:, None]).sum().item()
            correct += (lp.argmax(-1) == target).sum().item()
            count += int(mask.sum())
    tail = losses[-50:]
    print(
        json.dumps(
            {
                "tool": "transformers",
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "threads": a.threads,
                "examples": len(train),
                "tokenize_secs": tokenize_secs,
                "steps": a.steps,
                "train_secs": train_secs,
                "tokens_per_sec": tokens / train_secs,
                "sequences_per_sec": a.steps * a.batch_size / train_secs,
                "time": timing,
                "first_loss": losses[0],
                "final_loss_mean50": sum(tail) / len(tail),
                "losses": losses,
                "heldout": {
                    "loss": nll / count,
                    "perplexity": math.exp(nll / count),
                    "accuracy": correct / count,
                    "masked_tokens": count,
                    "sequences": len(heldout),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
