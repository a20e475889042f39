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
