"""Quality per wall-clock: train on data/examples/tinyshakespeare.txt for a time budget and score the best checkpoint
on the whole validation split (the last 10% of the file), in bits per byte, with the run's training tokens/s.

    python bench/bench_train.py --runs "preset=cpu-2min" "preset=cpu-2min,optimizer=adamw"
    python bench/bench_train.py --runs "preset=cpu-10min"
    python bench/bench_train.py --budget 120 --runs "preset=cpu" "preset=cpu,vocab_size=2048,max_length=64,batch_size=12"

Each run is `gptlite.training.train` with a preset and overrides (comma-separated `field=value`), in its own process
one after the other, each with a fresh run directory (so the tokenizer is trained on the training split of this file).
Speed on these machines varies by up to 40% for minutes at a time, so every result is printed with its tokens/s.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "examples" / "tinyshakespeare.txt"


def parse(spec: str) -> dict:
    out = {}
    for item in filter(None, spec.split(",")):
        k, v = item.split("=", 1)
        out[k] = v
    return out


def one_run(spec: str, budget: float, data: Path) -> dict:
    opts = parse(spec)
    preset = opts.pop("preset", "cpu")
    with tempfile.TemporaryDirectory() as d:
        args = [sys.executable, "-m", "gptlite.training", "--data", str(data), "--out", f"{d}/run", "--preset", preset,
                "--quiet", "--sample-tokens", "0"]
        if budget: args += ["--time-budget", str(budget), "--max-iters", "10000000"]   # else the preset's budget
        for k, v in opts.items(): args += ["--" + k.replace("_", "-"), v]
        start = time.time()
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0: return dict(spec=spec, error=r.stderr.strip()[-300:])
        summary = json.loads(Path(f"{d}/run/summary.json").read_text())
        rows = [json.loads(l) for l in Path(f"{d}/run/metrics.jsonl").read_text().splitlines()]
        tok_s = statistics.median(r["tokens_per_s"] for r in rows if "tokens_per_s" in r)
        evals = [r for r in rows if "val_loss" in r]
        best = min(evals, key=lambda r: r["val_loss"])
        return dict(spec=f"preset={preset}," + ",".join(f"{k}={v}" for k, v in opts.items()), budget=budget,
                    full_val_bpb=round(summary["full_val_bpb"], 4), full_val_loss=round(summary["full_val_loss"], 4),
                    best_step=best["step"], steps=summary["step"], tokens_per_s=round(tok_s),
                    wall_s=round(time.time() - start, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=None, help="seconds (default: each preset's time_budget)")
    ap.add_argument("--data", type=Path, default=SHAKESPEARE)
    ap.add_argument("--runs", nargs="+", default=["preset=cpu"])
    args = ap.parse_args()
    if not args.data.is_file(): sys.exit(f"{args.data} not found")
    import torch
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__}, {os.cpu_count()} cores, budget {args.budget or 'from preset'}, "
          f"{args.data.name}", flush=True)
    for spec in args.runs:
        print(json.dumps(one_run(spec, args.budget, args.data)), flush=True)


if __name__ == "__main__": main()
