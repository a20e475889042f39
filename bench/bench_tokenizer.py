"""Tokenizer and data-pipeline benchmark.

1. Tokenizer training time and bytes/token at vocab 5000 on data/examples/sample.txt and data/examples/tinyshakespeare.txt.
2. Tokenization throughput and peak RSS on a synthetic corpus (default 100 MB, in 20 files), for
   gptlite's streaming `prepare_data` (which encodes with tiktoken, `fast_encoder`), the same with Hugging Face's
   encoder (`gptlite-hf`), and the plain Hugging Face way (`tokenizer(text)` on each whole file), interleaved and
   repeated; each run in its own process so that peak RSS is its own.

    python bench/bench_tokenizer.py [--mb 100] [--repeats 3] [--baseline-mb 20]
"""
import argparse, json, os, random, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE, SHAKESPEARE = ROOT / "data" / "examples" / "sample.txt", ROOT / "data" / "examples" / "tinyshakespeare.txt"


def proc_status_mb(field):
    "VmRSS (now) or VmHWM (peak) of this process, in MB, from /proc."
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"): return int(line.split()[1]) / 1024


def reset_peak_rss():
    "Reset this process's peak RSS (Linux: writing 5 to clear_refs), so the peak measured is the run's own."
    Path("/proc/self/clear_refs").write_text("5")


def worker(mode, corpus, tokenizer_dir):
    "One measured run in a fresh process; prints a JSON line."
    from gptlite.data import find_text_files, prepare_data
    from gptlite.tokenizer import load_tokenizer
    tok = load_tokenizer(tokenizer_dir)
    files = find_text_files(corpus)
    n_bytes = sum(f.stat().st_size for f in files)
    reset_peak_rss()
    rss_before = proc_status_mb("VmRSS")
    start = time.perf_counter()
    if mode.startswith("gptlite"):
        if mode == "gptlite-hf":                      # the same pipeline with Hugging Face's encoder
            import gptlite.data
            gptlite.data.fast_encoder = lambda tokenizer: None
        with tempfile.TemporaryDirectory() as cache:
            td = prepare_data(files, tok, cache_dir=cache, progress=False)
            n_tokens = len(td.train) + len(td.val)
    else:  # what a user of transformers writes: read each file, call the tokenizer, keep the ids
        ids = [tok(f.read_text(encoding="utf-8"))["input_ids"] for f in files]
        n_tokens = sum(map(len, ids))
    seconds = time.perf_counter() - start
    print(json.dumps(dict(mode=mode, mb=n_bytes / 1e6, tokens=n_tokens, seconds=seconds,
                          mb_per_s=n_bytes / 1e6 / seconds, rss_before_mb=rss_before, peak_rss_mb=proc_status_mb("VmHWM"))))


def make_corpus(folder, mb, n_files=20):
    "A synthetic corpus: paragraphs of data/examples/sample.txt in random order, with random numbers mixed in."
    rng = random.Random(0)
    paragraphs = [p for p in SAMPLE.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    folder.mkdir(parents=True, exist_ok=True)
    per_file = mb * 1_000_000 // n_files
    for i in range(n_files):
        with open(folder / f"part{i:02d}.txt", "w", encoding="utf-8") as f:
            written = 0
            while written < per_file:
                p = f"{rng.choice(paragraphs)} ({rng.randint(1, 10**6)})\n\n"
                written += f.write(p)
    return folder


def train_stats(path, vocab_size=5000, repeats=3):
    from gptlite.data import iter_text_chunks
    from gptlite.tokenizer import bytes_per_token, train_tokenizer
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tok = train_tokenizer(iter_text_chunks(path), vocab_size=vocab_size)
        times.append(time.perf_counter() - start)
    text = path.read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    held = train_tokenizer([text[:cut]], vocab_size=vocab_size)
    return dict(corpus=path.name, mb=path.stat().st_size / 1e6, train_s_median=statistics.median(times),
                n_tokens=len(tok), bytes_per_token=bytes_per_token(tok, text),
                held_out_bytes_per_token=bytes_per_token(held, text[cut:])), tok


def run(mode, corpus, tok_dir):
    out = subprocess.run([sys.executable, __file__, "--worker", mode, str(corpus), str(tok_dir)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--baseline-mb", type=int, default=20, help="size of the corpus for the side-by-side comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", nargs=3)
    args = ap.parse_args()
    if args.worker: return worker(*args.worker)

    import torch
    print(f"# {time.strftime('%Y-%m-%d')} torch {torch.__version__}, {os.cpu_count()} cores")
    print("## tokenizer training (vocab_size=5000, median of 3)")
    work = Path(tempfile.mkdtemp(prefix="gptlite-bench-"))
    try:
        for path in [SAMPLE, SHAKESPEARE]:
            if not path.is_file(): print(f"{path} not found, skipped"); continue
            stats, tok = train_stats(path)
            print(json.dumps(stats))
            if path == SAMPLE: tok.save_pretrained(work / "tok")
        small, big = make_corpus(work / "small", args.baseline_mb), make_corpus(work / "big", args.mb)
        print(f"## {args.baseline_mb} MB synthetic corpus, side by side (interleaved, {args.repeats} repeats)")
        results = {"gptlite": [], "gptlite-hf": [], "hf-whole-file": []}
        for _ in range(args.repeats):
            for mode in results:
                r = run(mode, small, work / "tok"); results[mode].append(r); print(json.dumps(r))
        med = {m: statistics.median(r["mb_per_s"] for r in rs) for m, rs in results.items()}
        peak = {m: statistics.median(r["peak_rss_mb"] for r in rs) for m, rs in results.items()}
        print(f"median MB/s: gptlite {med['gptlite']:.2f}, gptlite-hf {med['gptlite-hf']:.2f}, hf-whole-file "
              f"{med['hf-whole-file']:.2f}; ratios {med['gptlite'] / med['gptlite-hf']:.2f}x and "
              f"{med['gptlite'] / med['hf-whole-file']:.2f}x; peak RSS MB: gptlite {peak['gptlite']:.0f}, gptlite-hf "
              f"{peak['gptlite-hf']:.0f}, hf-whole-file {peak['hf-whole-file']:.0f}; before tokenizing "
              f"{statistics.median(r['rss_before_mb'] for rs in results.values() for r in rs):.0f}")
        print(f"## {args.mb} MB synthetic corpus, gptlite streaming ({args.repeats} repeats)")
        big_runs = [run("gptlite", big, work / "tok") for _ in range(args.repeats)]
        for r in big_runs: print(json.dumps(r))
        print(f"median {statistics.median(r['mb_per_s'] for r in big_runs):.2f} MB/s, peak RSS "
              f"{statistics.median(r['peak_rss_mb'] for r in big_runs):.0f} MB (after imports: "
              f"{statistics.median(r['rss_before_mb'] for r in big_runs):.0f} MB before tokenizing)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__": main()
