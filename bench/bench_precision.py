"""Does bf16 autocast make a *training step* faster here? fp32 against bf16 autocast, by model width.

    python bench/bench_precision.py                 # widths 64..768, 2 layers, batch 8 x 64 tokens, 5 rounds

Each round times `gptlite.training.step_seconds` (one forward and backward pass per precision, interleaved, median of
3 after a warm-up) for every width; the table gives the median over rounds, the ratio fp32 / bf16, and what
`dtype="auto"` (`pick_precision`: bf16 only if at least 10% faster) picks. Prints the CPU model and its bf16 flags.
"""
import argparse, datetime
from pathlib import Path

import numpy as np
import torch

import sys
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import cpu_info  # noqa: E402
from gptlite.model import GPT
from gptlite.training import fast_bf16, make_config, pick_precision, step_seconds


def cpu_description() -> str:
    return f"{cpu_info()}; torch threads {torch.get_num_threads()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", default="64,128,256,512,768")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    widths, cpu = [int(w) for w in args.widths.split(",")], torch.device("cpu")
    print(f"# bench_precision.py  {datetime.datetime.now():%Y-%m-%d %H:%M}  torch {torch.__version__}")
    print(f"# {cpu_description()}; fast_bf16 (the flag test): {fast_bf16(cpu)}")
    models = {w: GPT(make_config(n_layers=2, d_model=w, n_heads=4, max_length=64).model_config(1000)) for w in widths}
    runs = {w: [] for w in widths}
    for _ in range(args.rounds):                      # rounds outside, widths inside: noise spreads over all
        for w, m in models.items(): runs[w].append(step_seconds(m, batch_size=8, block_size=64, device=cpu))
    print("| width | fp32 step (ms) | bf16 autocast step (ms) | fp32 / bf16 | auto picks |")
    print("| --- | --- | --- | --- | --- |")
    for w in widths:
        med = {k: float(np.median([r[k] for r in runs[w]])) for k in ("fp32", "bf16")}
        print(f"| {w} | {med['fp32'] * 1e3:.1f} | {med['bf16'] * 1e3:.1f} | {med['fp32'] / med['bf16']:.2f}x | "
              f"{pick_precision(med)} |")


if __name__ == "__main__": main()
