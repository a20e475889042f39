"""int8 against float32 for CPU decoding, side by side: tokens/s at batch 1 and 8, and the quality cost.

    python bench/bench_int8.py [--rounds 5] [--checkpoint saved_models/run]

Speed: the seed and small configs with random weights (speed does not depend on training), top-k 50 / top-p 0.9,
128 new tokens, both models in each round, alternating which goes first; medians. Quality: validation bits per byte
of a trained checkpoint (default: the newest under saved_models/) in float32 and int8, on the validation split of
the corpus it was trained on (`data/` unless --data).
"""
import argparse, json, statistics, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
CONFIGS = {"seed": dict(n_layers=2, n_heads=4, d_model=256), "small": dict(n_layers=6, n_heads=6, d_model=384)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--checkpoint")
    ap.add_argument("--data", default=str(ROOT / "data" / "examples" / "sample.txt"))
    args = ap.parse_args()
    from gptlite.data import prepare_data
    from gptlite.model import GPT, GPTConfig, load_checkpoint
    from gptlite.engine import generate, latest_checkpoint, quantize_int8, weights_size
    from gptlite.tokenizer import train_tokenizer
    from gptlite.training import evaluate_split
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"quantized engine {torch.backends.quantized.engine}", flush=True)
    tok = train_tokenizer([(ROOT / "data" / "examples" / "sample.txt").read_text()], vocab_size=5000)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, len(tok), (16,), generator=g).tolist() for _ in range(8)]
    for name, c in CONFIGS.items():
        torch.manual_seed(0)
        fp32 = GPT(GPTConfig(vocab_size=len(tok), max_length=512, dropout=0.0, **c)).eval()
        int8 = quantize_int8(fp32)
        models = {"fp32": fp32, "int8": int8}
        rows = {f"{b}_{m}": [] for b in ("b1", "b8") for m in models}
        for m in models.values(): generate(m, tok, [prompts[0]], max_new_tokens=8)   # warm up
        for r in range(args.rounds):
            for batch, key in ((prompts[:1], "b1"), (prompts, "b8")):
                order = list(models.items()) if r % 2 == 0 else list(models.items())[::-1]
                for label, m in order:
                    t = time.perf_counter()
                    out = generate(m, tok, batch, max_new_tokens=128, top_k=50, top_p=0.9, seed=1)
                    rows[f"{key}_{label}"].append(sum(len(o.token_ids) for o in out) / (time.perf_counter() - t))
        med = {k: round(statistics.median(v), 1) for k, v in rows.items()}
        ratio = lambda b: round(statistics.median(i / f for i, f in zip(rows[f"{b}_int8"], rows[f"{b}_fp32"])), 2)
        print(json.dumps(dict(config=name, weights_mb_fp32=round(weights_size(fp32) / 1e6, 2),
                              weights_mb_int8=round(weights_size(int8) / 1e6, 2), **med,
                              b1_int8_over_fp32=ratio("b1"), b8_int8_over_fp32=ratio("b8"))), flush=True)
    path = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(ROOT / "saved_models")
    model, tok = load_checkpoint(path)
    data = prepare_data(args.data, tok, cache_dir=path / "cache", progress=False)
    fp, q = (data.val_bits_per_byte(evaluate_split(m, data, "val")) for m in (model, quantize_int8(model)))
    print(json.dumps(dict(checkpoint=str(path), val_bpb_fp32=round(fp, 5), val_bpb_int8=round(q, 5),
                          change_percent=round(100 * (q / fp - 1), 3))))


if __name__ == "__main__": main()
