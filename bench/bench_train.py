"""Quality per wall-clock: train for a time budget and score the best checkpoint on the whole validation split (the
last 10% of the text), in bits per byte, with where the best validation came, and how much of what it writes is words.

    python bench/bench_train.py --budget 120 --runs default preset=cpu-2min       # the default run against a preset
    python bench/bench_train.py --budget 600 --runs default preset=cpu-10min
    python bench/bench_train.py --budget 180 --runs default --data data/examples/sample.txt

A run is `default` (no preset: sized to the data and the budget) or `preset=NAME`, with overrides as comma-separated
`field=value`. Each runs `python -m gptlite.training` in its own process with a fresh run directory (so the tokenizer
is trained on the training split), one after the other; with `--rounds 2` the specs alternate (A B A B), because the
machines change speed by up to 40% for minutes at a time.

"Writes words" is the share of the words in 12 samples of 200 tokens (temperature 0.8, seeds 0-11, prompted with a
newline) that occur anywhere in the training text, compared case-insensitively.
"""
import argparse, json, os, platform, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "examples" / "tinyshakespeare.txt"
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def cpu_info() -> str:
    info = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").is_file() else ""
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    keep = [f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(keep) or 'none of avx2/avx512/amx'}"


def word_share(run_dir: Path, text: str, samples: int = 12, tokens: int = 200) -> float:
    "The share of generated words that occur in `text`."
    from gptlite.model import load_checkpoint
    from gptlite.engine import generate
    model, tok = load_checkpoint(run_dir)
    known = {w.lower() for w in WORD.findall(text)}
    words = []
    for seed in range(samples):
        out = generate(model, tok, ["\n"], max_new_tokens=tokens, temperature=0.8, seed=seed)[0].text
        words += WORD.findall(out)
    return sum(w.lower() in known for w in words) / max(1, len(words))


def one_run(spec: str, budget: float | None, data: Path) -> dict:
    opts = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    preset = opts.pop("preset", None)
    with tempfile.TemporaryDirectory() as d:
        args = [sys.executable, "-m", "gptlite.training", "--data", str(data), "--out", f"{d}/run", "--quiet",
                "--sample-tokens", "0"]
        if preset: args += ["--preset", preset]
        if budget: args += ["--time-budget", str(budget), "--max-iters", "10000000"]   # else the run's own budget
        for k, v in opts.items(): args += ["--" + k.replace("_", "-"), v]
        start = time.time()
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0: return dict(spec=spec, error=r.stderr.strip()[-300:])
        run = Path(d) / "run"
        summary = json.loads((run / "summary.json").read_text())
        cfg = json.loads((run / "train_config.json").read_text())
        rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        tok_s = statistics.median(r["tokens_per_s"] for r in rows if "tokens_per_s" in r)
        evals = [r for r in rows if "val_loss" in r]
        best = min(evals, key=lambda r: r["val_loss"])
        train_text = data.read_text(encoding="utf-8")
        train_text = train_text[:len(train_text) - len(train_text) // 10]       # about the training split
        return dict(spec=spec, budget=budget or cfg["time_budget"], full_val_bpb=round(summary["full_val_bpb"], 4),
                    full_val_loss=round(summary["full_val_loss"], 4), steps=summary["step"], best_step=best["step"],
                    best_at=round(best["elapsed_s"] / max(1e-9, evals[-1]["elapsed_s"]), 2), stopped_by=summary["stopped_by"],
                    words=round(word_share(run, train_text), 3), tokens_per_s=round(tok_s), precision=summary["precision"],
                    model=f"{cfg['n_layers']}x{cfg['d_model']}, ctx {cfg['max_length']}, vocab {cfg['vocab_size']}, "
                          f"batch {cfg['batch_size']}, lr {cfg['lr']}, dropout {cfg['dropout']}",
                    wall_s=round(time.time() - start, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=None, help="seconds (default: each run's own time_budget)")
    ap.add_argument("--data", type=Path, default=SHAKESPEARE)
    ap.add_argument("--runs", nargs="+", default=["default"])
    ap.add_argument("--rounds", type=int, default=1, help="repeat the specs, alternating")
    ap.add_argument("--out", type=Path, default=None, help="also append the results to this JSON-lines file")
    args = ap.parse_args()
    if not args.data.is_file(): sys.exit(f"{args.data} not found")
    import torch
    head = dict(date=time.strftime("%Y-%m-%d %H:%M"), machine=cpu_info(), torch=torch.__version__,
                threads=torch.get_num_threads(), data=args.data.name, budget=args.budget)
    print(json.dumps(head), flush=True)
    for _ in range(args.rounds):
        for spec in args.runs:
            result = one_run(spec, args.budget, args.data)
            print(json.dumps(result), flush=True)
            if args.out:
                with open(args.out, "a") as f: f.write(json.dumps({**head, **result}) + "\n")


if __name__ == "__main__": main()
