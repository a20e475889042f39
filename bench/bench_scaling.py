"""Best validation bits per byte against model size, for two corpus sizes and two time budgets: the measurements behind
the default run's sizing rule (`gptlite.training.plan_size`, taught in Part 4 of `nbs/04_training.ipynb`).

    python bench/bench_scaling.py                       # writes bench/results/scaling.json

Every run uses the default recipe (4 layers, context 64, batch 24, Muon, lr 4e-3, vocabulary and dropout from the
corpus as `plan_size` chooses them) and varies only the width. A time budget is turned into a number of steps by
timing full training steps of each size first (2 threads, interleaved, median of rounds); the runs then train for
that many steps with one thread (`OMP_NUM_THREADS=1`), so their results do not depend on the machine's speed while
they run, and another job can share the machine. Each run trains its own tokenizer on the training split and is
scored on the whole validation split with its best checkpoint.
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_train import cpu_info  # noqa: E402
RECIPE = dict(batch_size=24, lr=4e-3, warmup_iters=30, optimizer="muon")   # everything but the size: fixed
CORPORA = {"sample": ROOT / "data" / "examples" / "sample.txt", "shakespeare": ROOT / "data" / "examples" / "tinyshakespeare.txt"}


def main():
    from gptlite.training import auto_vocab, make_config, measure_train_step, dropout_for, pick_precision, width_config
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpora", default="sample,shakespeare")
    ap.add_argument("--budgets", default="60,180")
    ap.add_argument("--widths", default="64,128,192,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scaling.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    widths = [int(w) for w in args.widths.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    result = dict(machine=f"{cpu_info()}, torch {torch.__version__}", date=time.strftime("%Y-%m-%d %H:%M"), runs=[], step_seconds={})
    print(result["machine"], flush=True)
    for name in args.corpora.split(","):
        path = CORPORA[name]
        vocab = auto_vocab(path.stat().st_size)
        times = {(w, p): [] for w in widths for p in ("fp32", "bf16")}
        for _ in range(args.rounds):                     # interleaved: a speed change affects every size alike
            for w in widths:
                cfg = make_config("cpu", vocab_size=vocab, **{**RECIPE, **width_config(w)})
                for p, secs in measure_train_step(cfg, vocab, precisions=("fp32", "bf16"))[0].items():
                    times[w, p].append(secs)
        med = {k: float(np.median(t)) for k, t in times.items()}
        precision = {w: pick_precision({p: med[w, p] for p in ("fp32", "bf16")}) for w in widths}
        secs = {w: med[w, precision[w]] for w in widths}
        result["step_seconds"][name] = {w: dict(fp32=med[w, "fp32"], bf16=med[w, "bf16"]) for w in widths}
        print(name, {w: f"{s * 1e3:.0f} ms {precision[w]}" for w, s in secs.items()}, flush=True)
        for budget in budgets:
            for w in widths:
                steps = max(50, int(budget / secs[w]))
                with tempfile.TemporaryDirectory() as d:
                    # the tokens per epoch are only known after tokenizing: a first, cheap prepare
                    from gptlite.data import prepare
                    _, td = prepare(path, f"{d}/run", vocab, progress=False)
                    epochs = steps * 24 * 64 / td.meta["train_tokens"]
                    cfg = dict(vocab_size=vocab, **{**RECIPE, **width_config(w)}, dropout=dropout_for(epochs), max_iters=steps,
                               time_budget=0, eval_interval=max(10, steps // 8), sample_tokens=0)
                    cmd = [sys.executable, "-m", "gptlite.training", "--data", str(path), "--out", f"{d}/run",
                           "--quiet", "--dtype", precision[w]]
                    for k, v in cfg.items(): cmd += ["--" + k.replace("_", "-"), str(v)]
                    t = time.time()
                    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                    if r.returncode: print(r.stderr[-500:], flush=True); continue
                    summary = json.loads(Path(f"{d}/run/summary.json").read_text())
                    evals = [json.loads(l) for l in open(f"{d}/run/metrics.jsonl") if "val_loss" in l]
                    best = min(evals, key=lambda m: m["val_loss"])
                    from gptlite.model import load_checkpoint
                    model, _ = load_checkpoint(f"{d}/run", with_tokenizer=False)
                    run = dict(corpus=name, corpus_bytes=path.stat().st_size, train_tokens=td.meta["train_tokens"],
                               budget_s=budget, width=w, params=model.num_params(), steps=steps, epochs=round(epochs, 2),
                               dropout=cfg["dropout"], vocab=vocab, precision=precision[w], val_bpb=summary["full_val_bpb"],
                               best_step=best["step"], wall_s=round(time.time() - t))
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
                Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__": main()
