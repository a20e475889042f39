"""Kill a training run at every write point (each os.replace, os.rename and os.fsync: the steps of a save), with
os._exit so that no cleanup runs, as a power cut or `kill -9` would; then start it again (`--resume` when a
checkpoint survived, afresh otherwise) and compare with a run that was never killed.

    python tests/crash_points.py DATA WORKDIR [FIRST-LAST]   # one JSON line per kill point (tests/test_training.py)

Each run is a forked child of this process, which runs the reference run itself first, on one thread (so that the
children start warm, and forking a process with no thread pool is safe), and compares runs by their files' bytes."""
import hashlib, json, os, sys
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"   # its thread pool, once started here, would deadlock forked children

import matplotlib.pyplot  # noqa: F401  imported once, before any fork, rather than in every child
from transformers import PreTrainedTokenizerFast  # noqa: F401

import torch

from gptlite.training import make_config, read_metrics, train

DATA, ROOT = sys.argv[1], Path(sys.argv[2])
CFG = make_config(n_layers=1, d_model=32, n_heads=2, max_length=32, batch_size=4, vocab_size=300, eval_iters=2,
                  sample_tokens=0, warmup_iters=2, log_interval=5, dropout=0.1, max_iters=10, eval_interval=5, dtype="fp32",
                  time_budget=0)
WRITE_POINTS = [(os, "replace"), (os, "rename"), (os, "fsync")]


def in_child(fn) -> int:
    "Run fn in a forked child; its exit code (9: killed at a write point, 3: an exception)."
    pid = os.fork()
    if pid == 0:
        code = 0
        try: fn()
        except BaseException as e: print(f"child: {e!r}", file=sys.stderr); code = 3
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def patch_write_points(kill_at: int | None, counter_file: Path | None = None):
    "Count the write points; exit hard just before the kill_at-th one (None: only count, into counter_file)."
    count = [0]
    for module, name in WRITE_POINTS:
        real = getattr(module, name)
        def wrapper(*args, _real=real, **kw):
            count[0] += 1
            if count[0] == kill_at: os._exit(9)
            result = _real(*args, **kw)
            if counter_file is not None:
                with open(counter_file, "w") as f: f.write(str(count[0]))
            return result
        setattr(module, name, wrapper)


def fingerprint(run: Path) -> dict:
    "What must match a run never killed: the best model, last/'s model, and the metrics without timings."
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.is_file() else None
    rows = [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in read_metrics(run / "metrics.jsonl")]
    return dict(best=digest(run / "model.safetensors"), last=digest(run / "last" / "model.safetensors"), metrics=rows)


def main():
    torch.set_num_threads(1)
    reference = ROOT / "reference"
    train(CFG, DATA, reference, progress=False)        # in this process: every child starts with what it loaded
    counter = ROOT / "points.txt"
    assert in_child(lambda: (patch_write_points(None, counter), train(CFG, DATA, ROOT / "count", progress=False))) == 0
    n_points, expected = int(counter.read_text()), fingerprint(reference)
    first, last = map(int, sys.argv[3].split("-")) if len(sys.argv) > 3 else (1, n_points)
    for k in range(first, min(last, n_points) + 1):
        run = ROOT / f"kill-{k}"
        killed = in_child(lambda: (patch_write_points(k), train(CFG, DATA, run, progress=False)))
        resumable = (run / "last" / "training_state.pt").is_file() or any(run.glob(".last.*"))
        def restart():
            from gptlite.training import recover_checkpoint
            recover_checkpoint(run / "last")
            train(CFG, DATA, run, progress=False, resume=(run / "last" / "training_state.pt").is_file())
        restarted = in_child(restart)
        got = fingerprint(run)
        print(json.dumps(dict(point=k, of=n_points, killed=killed, resumable=resumable, restarted=restarted,
                              same=got == expected, leftovers=sorted(p.name for p in run.iterdir() if ".tmp" in p.name
                                                                      or ".old" in p.name))), flush=True)


if __name__ == "__main__": main()
