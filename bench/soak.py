"""Soak test: many concurrent streaming clients against one server, some hanging up mid-stream.

    python bench/soak.py                         # 64 clients for 60 s against a seed-config model (random weights)
    python bench/soak.py --clients 64 --seconds 60 --checkpoint saved_models/run

Afterwards it checks what a server under load must keep: no 5xx; every completed greedy answer equal to the same
request served alone; `/metrics` consistent with what the clients counted (requests, tokens, nothing left active or
queued); resident memory back near its value before the load (after a warm-up). `tests/test_soak.py` runs a short form in CI.
"""
import argparse, asyncio, json, random, sys, tempfile, time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from bench_api import make_checkpoint, start_server  # noqa: E402

PROMPTS = ["The baker", "In the morning, the old", "She said", "Once upon a time", "The sea was", "A letter came",
           "He opened the door and", "The market", "Rain fell on the", "Every evening, the"]


def metric(url: str, name: str, labels: str = "") -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + labels + " "): return float(line.split()[1])
    return 0.0


async def client(http, url, rng, until, max_length, hang_up, stats, count=None):
    "Stream requests back to back (until `until`, or `count` of them); a fraction `hang_up` is abandoned early."
    sent = 0
    while (time.perf_counter() < until) if count is None else sent < count:
        sent += 1
        prompt, greedy, leave = rng.choice(PROMPTS), rng.random() < 0.5, rng.random() < hang_up
        body = {"prompt": prompt, "max_length": max_length, "temperature": 0 if greedy else 0.9, "seed": rng.randrange(1000)}
        text, tokens, finished = "", 0, False
        async with http.stream("POST", url + "/generate/stream", json=body) as r:
            stats["requests"] += 1
            if r.status_code >= 500: stats["5xx"] += 1; continue
            if r.status_code != 200: stats["4xx"] += 1; await r.aread(); continue
            async for line in r.aiter_lines():
                if not line.startswith("data: {"): continue
                event = json.loads(line[6:])
                text += event["text"]; tokens += len(event["token_ids"])
                if "finish_reason" in event: finished = True
                if leave and tokens >= 3: break                                   # hang up mid-stream
        stats["tokens"] += tokens
        if leave and not finished: stats["hung_up"] += 1
        elif finished:
            stats["completed"] += 1
            if greedy: stats["greedy"].setdefault(prompt, set()).add(text)


async def load(url, clients, seconds, max_length, hang_up, seed=0, requests_per_client=None):
    stats = dict(requests=0, completed=0, hung_up=0, tokens=0, **{"5xx": 0, "4xx": 0}, greedy={})
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients + 8)) as http:
        until = time.perf_counter() + seconds
        await asyncio.gather(*[client(http, url, random.Random(seed + i), until, max_length, hang_up, stats,
                                      requests_per_client) for i in range(clients)])
    return stats


def soak(url: str, pid: int, clients: int = 64, seconds: float = 60, max_length: int = 48, hang_up: float = 0.15,
         requests_per_client: int | None = None) -> dict:
    """Run the load against a running server (`pid` for its memory) and check the aftermath; returns the figures.
    The load lasts `seconds`, or, with `requests_per_client`, exactly that many requests per client (the tests)."""
    import psutil
    proc = psutil.Process(pid)
    for p in PROMPTS: httpx.post(url + "/generate", json={"prompt": p, "max_length": max_length, "temperature": 0}, timeout=60)
    rss_before = proc.memory_info().rss
    requests_before = metric(url, "gptlite_requests_total", '{path="/generate/stream",status="200"}')
    tokens_before = metric(url, "gptlite_generated_tokens_total")
    start = time.perf_counter()
    stats = asyncio.run(load(url, clients, seconds, max_length, hang_up, requests_per_client=requests_per_client))
    elapsed = time.perf_counter() - start
    deadline = time.time() + 30                                  # hung-up requests retire at the next step
    while time.time() < deadline and (metric(url, "gptlite_active_sequences") or metric(url, "gptlite_queue_depth")):
        time.sleep(0.1)
    alone = {p: httpx.post(url + "/generate", json={"prompt": p, "max_length": max_length, "temperature": 0},
                           timeout=60).json()["generated_text"] for p in stats["greedy"]}
    mismatched = {p: sorted(texts) for p, texts in stats["greedy"].items() if texts != {alone[p]}}
    time.sleep(1)
    rss_after = proc.memory_info().rss
    served = metric(url, "gptlite_requests_total", '{path="/generate/stream",status="200"}') - requests_before
    generated = metric(url, "gptlite_generated_tokens_total") - tokens_before
    return dict(clients=clients, seconds=round(elapsed, 1), requests=stats["requests"], completed=stats["completed"],
                hung_up=stats["hung_up"], server_errors=stats["5xx"], client_errors=stats["4xx"],
                tokens_received=stats["tokens"], tokens_per_s=round(stats["tokens"] / elapsed, 1),
                greedy_prompts=len(stats["greedy"]), greedy_mismatches=mismatched,
                metrics_stream_requests=served, metrics_generated_tokens=generated,
                active_after=metric(url, "gptlite_active_sequences"), queue_after=metric(url, "gptlite_queue_depth"),
                cancelled=metric(url, "gptlite_cancelled_requests_total"),
                rss_before_mb=round(rss_before / 2**20, 1), rss_after_mb=round(rss_after / 2**20, 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--checkpoint", help="default: a seed-config model with random weights")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = str(Path(tmp) / "seed-config"); make_checkpoint(Path(ckpt))
        server, url = start_server(ckpt)
        try: result = soak(url, server.pid, args.clients, args.seconds, args.max_length)
        finally: server.terminate(); server.wait(10)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}")
    print(json.dumps(result, indent=1))


if __name__ == "__main__": main()
