"""Shared fixtures: a small tokenizer trained on the shipped corpus, ONE tiny trained checkpoint for the whole session,
the paths tests read, and helpers to run a command's `main(argv)` in-process.

`pytest -m "not slow"` is the everyday loop (under two minutes on 2 cores); tests marked `slow` start extra servers,
browsers or processes under load, and run in CI with the rest."""
import shutil
from pathlib import Path

import pytest

from gptlite.data import iter_text_chunks
from gptlite.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "examples" / "sample.txt"
SHAKESPEARE = ROOT / "data" / "examples" / "tinyshakespeare.txt"
TINY_STEPS, TINY_CONTEXT = 120, 256


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: more than a few seconds (servers under load, browsers, DDP, kill -9); "
                                       "`pytest -m 'not slow'` leaves these out")


@pytest.fixture(scope="session")
def tok():
    "A byte-level BPE tokenizer (vocab 1000) trained on data/examples/sample.txt."
    return train_tokenizer(iter_text_chunks(SAMPLE), vocab_size=1000)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The session's one trained checkpoint: `runs/tiny`, a run directory (2 layers, width 48, context 256, 120 steps
    on data/examples/sample.txt, evaluated every 40: seconds to train), alone in its `runs/` folder. Every test file that needs
    a trained model shares it, so treat it as read-only: `copy_run` it to change it."""
    from gptlite.training import make_config, train
    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = make_config(n_layers=2, d_model=48, n_heads=4, max_length=TINY_CONTEXT, batch_size=4, max_iters=TINY_STEPS,
                      warmup_iters=10, eval_interval=40, eval_iters=2, vocab_size=500, sample_tokens=0, time_budget=0)
    train(cfg, SAMPLE, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_run):
    "(model, tokenizer) of `tiny_run`, loaded once."
    from gptlite.model import load_checkpoint
    return load_checkpoint(tiny_run)


def copy_run(run: Path, dest: Path) -> Path:
    "A private copy of a run directory, for a test that changes or breaks it."
    return Path(shutil.copytree(run, dest))


def run_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    "A command's `main(argv)` run in-process: (exit code, stdout, stderr), as the shell would see them."
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def free_port() -> int:
    "A TCP port nothing listens on, on the loopback interface."
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
