"""Serving throughput: aggregate tokens/s and time to first token against the number of concurrent clients.

    python bench/bench_api.py                          # 1, 2, 4, 8, 16, 32 clients, seed-config model
    python bench/bench_api.py --clients 1 16 --rounds 3 --json bench/api_results.json

Starts a real `python -m gptlite.api` on a loopback port, serving the seed config (2 layers, 4 heads, width 256,
vocab 5000, context 256; random weights: speed does not depend on training) with its default limits (16 sequences
decoded together). Each of N clients streams requests back to back from `/generate/stream` (a 16-token prompt,
`max_length` new tokens, temperature 0.8) for `--seconds`; aggregate tokens/s counts the tokens all clients received,
TTFT is each request's time from sending to its first piece. Rounds alternate the order of the client counts; medians
over rounds. The client runs on the same 2-core machine as the server (httpx, asyncio), as a user's benchmark would.

The baseline, measured in every round between the server's points (the server idle meanwhile): offline batched
`generate` in this process, on the same checkpoint, for the same 16 requests (the first 16 prompts, `max_length` new
tokens each, temperature 0.8) — what the server's 16 clients should come close to.
"""
import argparse, asyncio, json, os, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "examples" / "tinyshakespeare.txt"


def start_server(checkpoint: str, *args, env=None) -> tuple[subprocess.Popen, str]:
    "`python -m gptlite.api` on a free loopback port, once /health answers 200; the process and its URL."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "gptlite.api", "--checkpoint", checkpoint, "--port", str(port),
                             "--log-level", "warning", *args], env=env or {**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health").status_code == 200: return proc, url
        except httpx.TransportError: pass
        time.sleep(0.1)
    proc.kill(); raise TimeoutError("the server did not start")


def make_checkpoint(path: Path):
    import torch
    from gptlite.model import GPT, GPTConfig, save_checkpoint
    from gptlite.tokenizer import train_tokenizer
    text = SHAKESPEARE.read_text() if SHAKESPEARE.is_file() else (ROOT / "data" / "examples" / "sample.txt").read_text()
    tok = train_tokenizer([text], vocab_size=5000)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(tok), max_length=256, n_layers=2, n_heads=4, d_model=256, dropout=0.0))
    save_checkpoint(path, model, tok)
    return tok


async def client(url, prompt, max_length, until, ttfts, counts, http):
    while time.perf_counter() < until:
        start, first, n = time.perf_counter(), None, 0
        body = {"prompt": prompt, "max_length": max_length, "temperature": 0.8}
        async with http.stream("POST", url + "/generate/stream", json=body) as r:
            r.raise_for_status()
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]": continue
                if first is None: first = time.perf_counter() - start; ttfts.append(first)
                n += len(json.loads(line[6:])["token_ids"])          # an event carries one or more tokens
        counts.append(n)


async def measure(url, n_clients, seconds, max_length, prompts):
    ttfts, counts = [], []
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n_clients + 4)) as http:
        start = time.perf_counter()
        until = start + seconds
        await asyncio.gather(*[client(url, prompts[i % len(prompts)], max_length, until, ttfts, counts, http)
                               for i in range(n_clients)])
        elapsed = time.perf_counter() - start
    ttfts.sort()
    return dict(clients=n_clients, tokens_per_s=sum(counts) / elapsed, requests=len(counts),
                ttft_p50_ms=1000 * ttfts[len(ttfts) // 2], ttft_p95_ms=1000 * ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))])


def cpu_description() -> str:
    "The CPU model and the vector extensions that matter for matrix products, for every printed result."
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "unknown CPU")
    flags = set(next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), []))
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(wanted) or 'none of avx2/avx512/amx'}"


def offline(model, tok, prompts, max_length) -> float:
    "Tokens/s of offline batched `generate` for these prompts, in this process."
    from gptlite.engine import generate
    start = time.perf_counter()
    done = generate(model, tok, prompts, max_new_tokens=max_length, temperature=0.8, seed=0)
    return sum(len(c.token_ids) for c in done) / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the medians here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "seed-config"
        tok = make_checkpoint(ckpt)
        import torch
        g = torch.Generator().manual_seed(0)
        prompts = [tok.decode(torch.randint(0, len(tok), (16,), generator=g).tolist()) for _ in range(32)]
        from gptlite.model import load_checkpoint
        model, _ = load_checkpoint(ckpt)
        server, url = start_server(str(ckpt), env=os.environ)                # the server's default threads
        try:
            print(f"# {time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__}, {cpu_description()}", flush=True)
            print(f"# server threads: default ({torch.get_num_threads()}), {args.seconds} s per point, "
                  f"{args.max_length} new tokens per request", flush=True)
            asyncio.run(measure(url, 4, 2, args.max_length, prompts))                # warm up
            offline(model, tok, prompts[:16], 16)
            rows, offline_rows = {n: [] for n in args.clients}, []
            for r in range(args.rounds):
                for n in (args.clients if r % 2 == 0 else args.clients[::-1]):
                    m = asyncio.run(measure(url, n, args.seconds, args.max_length, prompts))
                    rows[n].append(m)
                    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in m.items()}), flush=True)
                    if n == 16:                                       # the baseline, right after the 16-client point
                        offline_rows.append(offline(model, tok, prompts[:16], args.max_length))
                        print(json.dumps({"offline_generate_16": round(offline_rows[-1], 1)}), flush=True)
        finally:
            server.terminate(); server.wait(10)
    med = [dict(clients=n, **{k: statistics.median(m[k] for m in ms) for k in ("tokens_per_s", "ttft_p50_ms", "ttft_p95_ms")})
           for n, ms in rows.items()]
    one = next((m["tokens_per_s"] for m in med if m["clients"] == 1), None)
    print("\n| clients | tokens/s | vs 1 client | TTFT p50 ms | TTFT p95 ms |\n| ---: | ---: | ---: | ---: | ---: |")
    for m in med:
        ratio = f"{m['tokens_per_s'] / one:.2f}x" if one else "-"
        print(f"| {m['clients']} | {m['tokens_per_s']:,.0f} | {ratio} | {m['ttft_p50_ms']:.1f} | {m['ttft_p95_ms']:.1f} |")
    if offline_rows:
        base = statistics.median(offline_rows)
        sixteen = next(m["tokens_per_s"] for m in med if m["clients"] == 16)
        print(f"\noffline batched generate, the same 16 requests: {base:,.0f} tokens/s (median of {len(offline_rows)}); "
              f"the server's 16 clients reach {sixteen / base:.0%} of it")
    if args.json: Path(args.json).write_text(json.dumps(med, indent=1) + "\n")


if __name__ == "__main__": main()
