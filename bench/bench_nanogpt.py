"""gptlite's default run against nanoGPT's CPU recipe at equal wall time, on a corpus neither was tuned on.

    python bench/bench_nanogpt.py                      # Python's own documentation topics (pydoc_data), 2 rounds
    python bench/bench_nanogpt.py --data some.txt --rounds 3

The baseline is the "baby GPT" command of nanoGPT's README for a CPU (`train_shakespeare_char` with
`--block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0`): a character-level GPT-2, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices), 100 warmup
steps then cosine to 1e-4, gradient clipping at 1.0, an evaluation of 20 batches every 250 steps. It is built here
with Hugging Face `transformers`' GPT2LMHeadModel (GPT-2 is the architecture nanoGPT implements; this one has biases
and the tanh GELU, nanoGPT's config has neither) and trained by this script's loop, which follows that recipe.
gptlite then trains with its default settings (sized to the data and the budget) for the baseline's wall time.
Both are scored on the same text: the last 10% of the corpus (from a line start), every character or token
predicted once, in bits per byte. The two sides alternate, `--rounds` times; medians and the ratio are printed.
"""
import argparse, json, math, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import cpu_info   # noqa: E402


def pydoc_corpus(path: Path) -> Path:
    "Python's documentation topics (the text of `help('topics')`), as one file: a corpus no gptlite setting was tuned on."
    import pydoc_data.topics as t
    path.write_text("\n\n".join(t.topics[k].strip() for k in sorted(t.topics)) + "\n", encoding="utf-8")
    return path


def split_text(text: str) -> tuple[str, str]:
    "gptlite's split: the last 10% of the bytes, moved forward to a line start."
    from gptlite.data import _line_start, _split_at
    raw = text.encode("utf-8")
    at = _line_start(raw, _split_at(len(raw), 0.1))
    return raw[:at].decode("utf-8"), raw[at:].decode("utf-8")


def nanogpt_baby(train: str, val: str, seed: int = 1337) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel
    chars = sorted(set(train + val))
    stoi = {c: i for i, c in enumerate(chars)}
    tr = torch.tensor([stoi[c] for c in train]); va = torch.tensor([stoi[c] for c in val])
    B, T, iters, warmup, lr, min_lr = 12, 64, 2000, 100, 1e-3, 1e-4
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(chars), n_positions=T, n_embd=128, n_layer=4, n_head=4,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                       bos_token_id=0, eos_token_id=0))
    decay = [p for p in model.parameters() if p.dim() >= 2]; rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99), fused=True)
    def batch(data):
        ix = torch.randint(len(data) - T, (B,))
        return torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + T + 1] for i in ix])
    def lr_at(it):
        if it < warmup: return lr * (it + 1) / (warmup + 1)
        return min_lr + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (iters - warmup))) * (lr - min_lr)
    start = time.time()
    for it in range(iters + 1):
        if it % 250 == 0:                                   # nanoGPT's evaluation: 20 batches of each split
            model.eval()
            with torch.no_grad():
                for data in (tr, va):
                    for _ in range(20): x, y = batch(data); model(x, labels=None)
            model.train()
        if it == iters: break
        for g in opt.param_groups: g["lr"] = lr_at(it)
        x, y = batch(tr)
        logits = model(x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    wall = time.time() - start
    model.eval(); total, n = 0.0, (len(va) - 1) // T
    with torch.no_grad():
        for s in range(0, n, 64):
            rows = range(s, min(n, s + 64))
            x = torch.stack([va[i * T:(i + 1) * T] for i in rows]); y = torch.stack([va[i * T + 1:(i + 1) * T + 1] for i in rows])
            logits = model(x).logits
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
    scored = val[:n * T + 1][1:]                              # the characters predicted
    return dict(side="nanoGPT baby (HF GPT-2, char)", wall_s=round(wall, 1),
                val_bpb=round(total / len(scored.encode("utf-8")) / math.log(2), 4))


def gptlite_default(path: Path, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        start = time.time()
        r = subprocess.run([sys.executable, "-m", "gptlite.training", "--data", str(path), "--out", f"{d}/run", "--quiet",
                            "--sample-tokens", "0", "--time-budget", f"{budget:.1f}"], capture_output=True, text=True)
        if r.returncode: raise SystemExit(r.stderr[-500:])
        s = json.loads(Path(f"{d}/run/summary.json").read_text())
        c = json.loads(Path(f"{d}/run/train_config.json").read_text())
        return dict(side="gptlite default", wall_s=round(time.time() - start, 1), budget_s=round(budget, 1),
                    val_bpb=round(s["full_val_bpb"], 4), steps=s["step"],
                    model=f"{c['n_layers']}x{c['d_model']}, vocab {c['vocab_size']}, dropout {c['dropout']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=None, help="a UTF-8 text (default: Python's documentation topics)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    path = args.data or pydoc_corpus(tmp / "pydoc_topics.txt")
    text = path.read_text(encoding="utf-8")
    train, val = split_text(text)
    print(json.dumps(dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=cpu_info(), torch=torch.__version__,
                          threads=torch.get_num_threads(), data=path.name, bytes=len(text.encode()))), flush=True)
    base, ours = [], []
    for _ in range(args.rounds):
        b = nanogpt_baby(train, val); print(json.dumps(b), flush=True); base.append(b)
        o = gptlite_default(path, b["wall_s"]); print(json.dumps(o), flush=True); ours.append(o)
    mb, mo = statistics.median(r["val_bpb"] for r in base), statistics.median(r["val_bpb"] for r in ours)
    print(f"median bits/byte: nanoGPT baby {mb:.3f}, gptlite default {mo:.3f}; ratio {mo / mb:.3f} (target <= 0.85)")


if __name__ == "__main__": main()
