"""Tokens per second of in-process generation, by the thread that asks: the main thread, a new thread for every call
(as Streamlit runs each rerun of a page), and the `gptlite-generate` command's own path. For context it also times
the decoder's steps run directly on the calling thread, without the engine: how generation ran before every call
went through the engine's one thread.

All ways run in turn, `--repeats` times, so that a busy moment of a shared machine slows them alike; the medians and
their ratios are printed, with the CPU and PyTorch's thread settings.

    python bench/bench_threads.py [--checkpoint saved_models/course] [--max-new-tokens 100] [--repeats 7]
"""
import argparse
import contextlib
import io
import os
import platform
import statistics
import threading
import time

import torch

import gptlite.engine as engine
from gptlite.engine import SlotKVCache, decoder_for, generate, latest_checkpoint
from gptlite.model import load_checkpoint


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"): return line.split(":", 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()


def on_new_thread(f):
    "Run `f` on a thread of its own and return its result."
    out = []
    t = threading.Thread(target=lambda: out.append(f()))
    t.start(); t.join()
    return out[0]


def engine_call(model, tok, prompt: str, n: int, seed: int, temperature: float) -> float:
    "Tokens per second of one `generate` call (through the engine's thread)."
    start = time.perf_counter()
    c = generate(model, tok, prompt, max_new_tokens=n, temperature=temperature, seed=seed)[0]
    return len(c.token_ids) / (time.perf_counter() - start)


def direct_steps(model, n: int) -> float:
    "Decoder steps per second for one row on the calling thread, without the engine (the old in-process path)."
    decoder, cache = decoder_for(model), SlotKVCache(model.config.n_layers, model.config.max_length, 1)
    token = torch.tensor([0])
    start = time.perf_counter()
    for i in range(n):
        if i % (model.config.max_length - 1) == 0: cache.reset(0)
        decoder.step(token, cache.select(0))
    return n / (time.perf_counter() - start)


def cli_call(checkpoint: str, prompt: str, n: int, seed: int, temperature: float) -> float:
    "Tokens per second of `gptlite-generate` (its `main`, in this process), generation only: the load is not timed."
    counted, times, real = [0], [], engine.stream_generate
    def counting(*args, **kwargs):
        times.append(time.perf_counter())
        for piece in real(*args, **kwargs):
            counted[0] += 1
            yield piece
        times.append(time.perf_counter())
    engine.stream_generate = counting                  # `main` looks it up in the module when it runs
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            engine.main(["--checkpoint", checkpoint, "--prompt", prompt, "--max-new-tokens", str(n), "--seed", str(seed),
                         "--temperature", str(temperature)])
    finally: engine.stream_generate = real
    return counted[0] / (times[-1] - times[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None, help="default: saved_models/course, else the newest checkpoint")
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    checkpoint = args.checkpoint or ("saved_models/course" if os.path.isdir("saved_models/course") else str(latest_checkpoint()))
    threads = torch.get_num_threads()                 # before any engine thread exists
    model, tok = load_checkpoint(checkpoint)
    n, t = args.max_new_tokens, args.temperature
    ways = {
        "engine, called from the main thread": lambda i: engine_call(model, tok, args.prompt, n, i, t),
        "engine, a new thread per call": lambda i: on_new_thread(lambda: engine_call(model, tok, args.prompt, n, i, t)),
        "gptlite-generate (its main)": lambda i: cli_call(checkpoint, args.prompt, n, i, t),
        "no engine: decoder steps on the main thread": lambda i: direct_steps(model, n),
        "no engine: decoder steps on a new thread": lambda i: on_new_thread(lambda: direct_steps(model, n)),
    }
    for f in ways.values(): f(0)                      # warm up: the engine, the decoder, the caches
    rates = {name: [] for name in ways}
    for i in range(args.repeats):                     # in turn, so that a busy moment slows every way alike
        for name, f in ways.items(): rates[name].append(f(i + 1))
    med = {name: statistics.median(r) for name, r in rates.items()}
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in open("/proc/cpuinfo").read()] \
        if os.path.exists("/proc/cpuinfo") else []
    print(f"checkpoint {checkpoint}: {model.num_params() / 1e6:.2f} M parameters; prompt {args.prompt!r}, "
          f"{n} new tokens at temperature {t}, {args.repeats} repeats in turn")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores, flags {' '.join(flags) or '?'}; torch {torch.__version__}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}, {threads} threads, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for name, m in med.items():
        unit = "steps/s" if name.startswith("no engine") else "tokens/s"
        print(f"  {name:44s} {m:7.0f} {unit} (median; {min(rates[name]):.0f} to {max(rates[name]):.0f})")
    cli = med["gptlite-generate (its main)"]
    print(f"new thread per call / gptlite-generate: {med['engine, a new thread per call'] / cli:.2f}; "
          f"main thread / gptlite-generate: {med['engine, called from the main thread'] / cli:.2f}; without the engine, "
          f"new thread / main thread: {med['no engine: decoder steps on a new thread'] / med['no engine: decoder steps on the main thread']:.2f}")


if __name__ == "__main__":
    main()
