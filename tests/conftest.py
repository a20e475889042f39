"Shared fixtures: a small tokenizer trained on the shipped corpus, and the paths tests read."
from pathlib import Path

import pytest

from gptlite.data import iter_text_chunks
from gptlite.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample.txt"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture(scope="session")
def tok():
    "A byte-level BPE tokenizer (vocab 1000) trained on data/sample.txt."
    return train_tokenizer(iter_text_chunks(SAMPLE), vocab_size=1000)


def train_tiny(out: Path, **overrides) -> Path:
    "A tiny checkpoint trained on data/sample.txt in seconds (2 layers, width 48), for tests that need a real run."
    from gptlite.training import make_config, train
    settings = dict(n_layers=2, d_model=48, n_heads=4, max_length=96, batch_size=8, max_iters=120, warmup_iters=10,
                    eval_interval=120, eval_iters=2, vocab_size=500, sample_tokens=0, time_budget=0)
    train(make_config(**{**settings, **overrides}), SAMPLE, out, progress=False)
    return out


def free_port() -> int:
    "A TCP port nothing listens on, on the loopback interface."
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
