"""Generation speed: gptlite `generate` against Hugging Face `GPT2LMHeadModel.generate` on identical weights.

    python bench/bench_generate.py                  # seed and small configs, batch 1 and 8, TTFT, 5 rounds
    python bench/bench_generate.py --rounds 3 --configs small

Both sides sample with top-k 50 and top-p 0.9 and generate 256 new tokens (a row that draws the end-of-text token
stops early on both sides, so tokens/s counts the tokens actually made). The HF model is `gptlite.model.to_hf` of the
same randomly initialised weights (speed does not depend on training), eval mode, fp32, sdpa attention. Each round runs
every measurement on both sides back to back, alternating which goes first (time to first token: five alternating
pairs per round, their median); medians over rounds, and the ratio of each round's pair. The memory-bandwidth bound of
batch-1 decoding is a measured bandwidth divided by the bytes of weights read per token: both the copy bandwidth
(bytes read + written by a 256 MB copy) and the read bandwidth (a sum over 256 MB) are reported.
"""
import argparse, json, statistics, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "examples" / "tinyshakespeare.txt"
CONFIGS = {"seed": dict(n_layers=2, n_heads=4, d_model=256), "small": dict(n_layers=6, n_heads=6, d_model=384)}


def copy_bandwidth(mb: int = 256) -> float:
    "GB/s of a large tensor copy (bytes read + written)."
    x = torch.empty(mb * 2**20 // 4); y = torch.empty_like(x); y.copy_(x)
    times = []
    for _ in range(5):
        t = time.perf_counter(); y.copy_(x); times.append(time.perf_counter() - t)
    return 2 * x.numel() * 4 / min(times) / 1e9


def read_bandwidth(mb: int = 256) -> float:
    "GB/s of reading a large tensor once (a sum), which is what a batch-1 decoding step does with the weights."
    x = torch.ones(mb * 2**20 // 4); x.sum()
    times = []
    for _ in range(5):
        t = time.perf_counter(); x.sum(); times.append(time.perf_counter() - t)
    return x.numel() * 4 / min(times) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--new-tokens", type=int, default=256)
    args = ap.parse_args()
    from transformers import __version__ as hf_version
    from gptlite.model import GPT, GPTConfig, to_hf
    from gptlite.engine import generate, stream_generate
    from gptlite.tokenizer import EOT, train_tokenizer

    text = SHAKESPEARE.read_text() if SHAKESPEARE.is_file() else (ROOT / "data" / "examples" / "sample.txt").read_text()
    tok = train_tokenizer([text], vocab_size=5000)
    V, eot = len(tok), tok.convert_tokens_to_ids(EOT)
    bw, read_bw = copy_bandwidth(), read_bandwidth()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__}, transformers {hf_version}, "
          f"{torch.get_num_threads()} threads, vocab {V}, copy bandwidth {bw:.1f} GB/s, read {read_bw:.1f} GB/s",
          flush=True)
    g = torch.Generator().manual_seed(0)
    short = [torch.randint(0, V, (16,), generator=g).tolist() for _ in range(8)]     # 8 prompts of 16 tokens
    long_prompt = torch.randint(0, V, (200,), generator=g).tolist()
    sampling = dict(top_k=50, top_p=0.9, temperature=1.0)

    for name in args.configs:
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=V, max_length=512, dropout=0.0, **CONFIGS[name])).eval()
        hf = to_hf(model).eval()
        weight_bytes = model.num_params() * 4

        def ours(prompts, n):
            t = time.perf_counter()
            out = generate(model, tok, prompts, max_new_tokens=n, seed=1, **sampling)
            return sum(len(c.token_ids) for c in out), time.perf_counter() - t

        def theirs(prompts, n):
            x = torch.tensor(prompts)
            t = time.perf_counter()
            with torch.no_grad():
                y = hf.generate(x, attention_mask=torch.ones_like(x), do_sample=True, max_new_tokens=n,
                                pad_token_id=eot, eos_token_id=eot, **sampling)
            dt = time.perf_counter() - t
            new = y[:, x.size(1):]
            made = sum(int((row == eot).nonzero()[0]) + 1 if (row == eot).any() else len(row) for row in new)
            return made, dt

        def ttft_ours():
            t = time.perf_counter()
            next(iter(stream_generate(model, tok, [long_prompt], max_new_tokens=1, seed=1, **sampling)))
            return time.perf_counter() - t

        def ttft_theirs():
            return theirs([long_prompt], 1)[1]

        ours([short[0]], 8); theirs([short[0]], 8)                                 # warm up both
        rows = {k: [] for k in ("b1_ours", "b1_hf", "b8_ours", "b8_hf", "ttft_ours", "ttft_hf")}
        for r in range(args.rounds):
            pairs = [("b1", lambda: ours([short[0]], args.new_tokens), lambda: theirs([short[0]], args.new_tokens)),
                     ("b8", lambda: ours(short, args.new_tokens), lambda: theirs(short, args.new_tokens))]
            for key, a, b in pairs:
                order = [("ours", a), ("hf", b)] if r % 2 == 0 else [("hf", b), ("ours", a)]
                for side, f in order:
                    made, dt = f()
                    rows[f"{key}_{side}"].append(made / dt)
            ttft = {"ours": [], "hf": []}
            for i in range(5):                                                     # short: several pairs per round
                for side, f in ([("ours", ttft_ours), ("hf", ttft_theirs)] if (r + i) % 2 == 0 else
                                [("hf", ttft_theirs), ("ours", ttft_ours)]):
                    ttft[side].append(f())
            for side in ttft: rows[f"ttft_{side}"].append(statistics.median(ttft[side]))
        med = {k: statistics.median(v) for k, v in rows.items()}
        paired = lambda k, inv=False: statistics.median(
            (h / o if inv else o / h) for o, h in zip(rows[f"{k}_ours"], rows[f"{k}_hf"]))
        result = dict(config=name, params=model.num_params(), **{k: round(v, 4 if "ttft" in k else 1) for k, v in med.items()},
                      b1_ratio=round(paired("b1"), 2), b8_ratio=round(paired("b8"), 2),
                      ttft_ratio_hf_over_ours=round(paired("ttft", inv=True), 2),
                      bound_b1_copy_bw=round(bw * 1e9 / weight_bytes, 1),
                      b1_fraction_of_copy_bound=round(med["b1_ours"] / (bw * 1e9 / weight_bytes), 3),
                      bound_b1_read_bw=round(read_bw * 1e9 / weight_bytes, 1),
                      b1_fraction_of_read_bound=round(med["b1_ours"] / (read_bw * 1e9 / weight_bytes), 3),
                      hf_b1_fraction_of_read_bound=round(med["b1_hf"] / (read_bw * 1e9 / weight_bytes), 3))
        print(json.dumps(result), flush=True)


if __name__ == "__main__": main()
