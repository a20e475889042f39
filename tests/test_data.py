"Data pipeline tests: streaming, the cache, the split, bits per byte, and every bad input the issue lists."
import json
import math
from pathlib import Path
import subprocess
import sys
import tempfile
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from tokenizers.pre_tokenizers import ByteLevel

from gptlite.data import (CACHE_FORMAT, CacheDamaged, DataError, TokenData, bits_per_byte, encode_corpus,
                          find_text_files, iter_text_chunks, main, prepare, prepare_data, split_pieces, training_text,
                          write_cache)
from gptlite.tokenizer import EOT, train_tokenizer

from conftest import SAMPLE, SHAKESPEARE, run_main


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def corpus(tmp_path, n_files=3):
    text = SAMPLE.read_text(encoding="utf-8")
    size = len(text) // n_files
    for i in range(n_files):
        write(tmp_path / "corpus" / f"sub{i % 2}" / f"doc{i}.txt", text[i * size:(i + 1) * size])
    return tmp_path / "corpus"


def test_round_trip_and_split(tok, tmp_path):
    folder = corpus(tmp_path)
    td = prepare_data(folder, tok, cache_dir=tmp_path / "cache", progress=False)
    files = find_text_files(folder)
    texts = [f.read_text(encoding="utf-8") for f in files]
    # decoding both splits gives every document back, each followed by <|endoftext|>
    assert tok.decode(np.concatenate([td.train, td.val]).tolist()) == "".join(t + EOT for t in texts)
    total = sum(len(t.encode()) for t in texts)
    assert td.meta["train_bytes"] + td.meta["val_bytes"] == total
    assert abs(td.meta["val_bytes"] / total - 0.1) < 0.01
    assert td.meta["train_tokens"] == len(td.train) and td.meta["val_tokens"] == len(td.val)
    assert td.train.dtype == np.uint16
    # the tokenizer's training text is exactly the train split: it never sees validation text
    assert "".join(training_text(files)).encode() == "".join(texts).encode()[:td.meta["train_bytes"]]


def test_small_chunks_lose_nothing(tok, tmp_path):
    text = "".join(f"line {i} with é and 🍞 {'x' * (i % 50)}\n" for i in range(500)) + "y" * 3000  # a long last line
    path = write(tmp_path / "a.txt", text)
    chunks = list(iter_text_chunks(path, chunk_bytes=64))
    assert "".join(chunks) == text
    assert all(len(c) < 5 * 64 for c in chunks)      # less than 4 blocks held without a safe cut, plus one block
    td = prepare_data(path, tok, cache_dir=tmp_path / "cache", chunk_bytes=64, progress=False)
    assert tok.decode(np.concatenate([td.train, td.val]).tolist()) == text + EOT


def gpt2_split(text):
    # the tokenizer's own GPT-2 split (GPT2_SPLIT, applied by the ByteLevel pre-tokenizer), as parts of `text`
    return [text[start:end] for _, (start, end) in ByteLevel(add_prefix_space=False).pre_tokenize_str(text)]


# Letters, digits, punctuation, an apostrophe, several kinds of whitespace (lines that start with spaces or tabs,
# blank lines, CRLF, Unicode spaces), multi-byte characters: every way a cut could change the GPT-2 split.
TRICKY = st.text(alphabet=st.sampled_from(list("ab1 é🍞'.,\n\t\r\u00a0\u3000\x85")), max_size=60) | st.text(max_size=60)


@settings(max_examples=300, deadline=None)
@given(text=TRICKY, chunk_bytes=st.sampled_from([16, 17, 32, 100]))
def test_pieces_encode_like_the_whole_text(tok, text, chunk_bytes):
    # 60 characters never fill the 4 blocks after which a piece is cut anywhere, so every cut must be a safe one
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.txt"
        path.write_bytes(text.encode("utf-8"))
        pieces = list(iter_text_chunks(path, chunk_bytes))
    text = text.removeprefix("\ufeff")
    assert "".join(pieces) == text
    assert [s for p in pieces for s in gpt2_split(p)] == gpt2_split(text)
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode(text)


def test_indented_lines_give_the_same_cache_for_any_chunk_size(tok, tmp_path):
    # lines that start with spaces or tabs, blank lines, trailing spaces: the ids of each split are those of its
    # text encoded whole, whatever chunk_bytes is (it is not part of the cache's name)
    path = write(tmp_path / "code.txt", "".join(f"def f{i}(x):\n    if x:\n\t\treturn {i}  \n\n    return x\n"
                                                for i in range(300)))
    raw = path.read_bytes()
    caches = [prepare_data(path, tok, cache_dir=tmp_path / f"cache{n}", chunk_bytes=n, progress=False)
              for n in (7, 64, 1000, 1 << 16)]
    n_train = caches[0].meta["train_bytes"]
    assert np.array_equal(caches[0].train, tok.encode(raw[:n_train].decode()))
    assert np.array_equal(caches[0].val, tok.encode(raw[n_train:].decode()) + [tok.eos_token_id])
    for td in caches[1:]:
        assert np.array_equal(td.train, caches[0].train) and np.array_equal(td.val, caches[0].val)


def test_byte_order_mark_and_bad_bytes_across_blocks(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhé🍞 there\n".encode() * 20)
    text = "".join(iter_text_chunks(path, chunk_bytes=5))
    assert text == "hé🍞 there\n" + "\ufeffhé🍞 there\n" * 19            # only the first one is a byte-order mark
    path.write_bytes("é".encode() * 10 + "🍞".encode()[:3])               # a character cut short by the file's end
    with pytest.raises(DataError, match="not valid UTF-8 at byte 20"):
        list(iter_text_chunks(path, chunk_bytes=3))


def test_cache_reused_and_invalidated(tok, tmp_path):
    folder = corpus(tmp_path)
    a = prepare_data(folder, tok, cache_dir=tmp_path / "cache", progress=False)
    b = prepare_data(folder, tok, cache_dir=tmp_path / "cache", progress=False)
    assert a.path == b.path
    (a.path / "train.bin").touch()  # reuse does not rewrite
    mtime = (a.path / "train.bin").stat().st_mtime_ns
    prepare_data(folder, tok, cache_dir=tmp_path / "cache", progress=False)
    assert (a.path / "train.bin").stat().st_mtime_ns == mtime
    with open(find_text_files(folder)[0], "a", encoding="utf-8") as f:
        f.write("One more sentence.\n")
    c = prepare_data(folder, tok, cache_dir=tmp_path / "cache", progress=False)
    assert c.path != a.path and len(c.train) > len(a.train)
    first = find_text_files(folder)[0]                # the edit undone: the first cache is found again
    first.write_text(first.read_text(encoding="utf-8").removesuffix("One more sentence.\n"), encoding="utf-8")
    assert prepare_data(folder, tok, cache_dir=tmp_path / "cache", progress=False).path == a.path


def test_cache_of_another_tokenizer(tok, tmp_path):
    td = prepare_data(SAMPLE, tok, cache_dir=tmp_path / "cache", progress=False)
    other = train_tokenizer([SAMPLE.read_text(encoding="utf-8")], vocab_size=500)
    with pytest.raises(DataError, match="written by another tokenizer"):
        TokenData.load(td.path, other)
    assert TokenData.load(td.path, tok).meta == td.meta
    with pytest.raises(DataError, match="not a token cache"):
        TokenData.load(tmp_path, tok)


def test_empty_folder_and_no_txt(tok, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty is empty"):
        prepare_data(tmp_path / "empty", tok, cache_dir=tmp_path / "cache")
    write(tmp_path / "md" / "notes.md", "text")
    with pytest.raises(DataError, match="has no .txt files"):
        prepare_data(tmp_path / "md", tok, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="does not exist"):
        find_text_files(tmp_path / "nope")


def test_non_utf8_names_file_and_offset_and_leaves_nothing(tok, tmp_path):
    folder = tmp_path / "mixed"
    write(folder / "a.txt", "good text\n" * 1000)
    (folder / "b.txt").write_bytes("x".encode() * 70000 + "é".encode("latin-1") + b" more\n")
    with pytest.raises(DataError, match=r"b\.txt: not valid UTF-8 at byte 70000"):
        prepare_data(folder, tok, cache_dir=tmp_path / "cache", chunk_bytes=4096, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_too_small(tok, tmp_path):
    write(tmp_path / "one.txt", "Just one line.\n")
    with pytest.raises(DataError, match="too small to split"):
        prepare_data(tmp_path / "one.txt", tok, cache_dir=tmp_path / "cache")
    write(tmp_path / "few.txt", "A short line.\n" * 40)
    td = prepare_data(tmp_path / "few.txt", tok, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(DataError, match="the val split has .* fewer than one block"):
        td.get_batch("val", 2, block_size=64)
    (tmp_path / "zero.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        prepare_data(tmp_path / "zero.txt", tok, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_data(tmp_path / "few.txt", tok, cache_dir=tmp_path / "cache", val_fraction=1.5)


def test_batches(tok, tmp_path):
    td = prepare_data(SAMPLE, tok, cache_dir=tmp_path / "cache", progress=False)
    g = torch.Generator().manual_seed(1)
    x, y = td.get_batch("train", 8, 32, generator=g)
    assert x.shape == y.shape == (8, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.max()) < len(tok)
    x2, _ = td.get_batch("train", 8, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)
    with pytest.raises(ValueError, match="split must be 'train' or 'val'"):
        td.get_batch("test", 8, 32)
    # every window is a real slice of the split
    flat = td.train.astype(np.int64)
    row = x[0].numpy()
    starts = np.flatnonzero(flat[:-32] == row[0])
    assert any(np.array_equal(flat[s:s + 32], row) for s in starts)


def test_bits_per_byte():
    assert bits_per_byte(math.log(2), 8, 8) == pytest.approx(1.0)
    assert bits_per_byte(2.0, 100, 400) == pytest.approx(2.0 * 100 / 400 / math.log(2))


@pytest.mark.slow
def test_streaming_memory_is_flat(tok, tmp_path):
    # Text is read 16 KB at a time and encoded a batch of chunks at a time: the peak of Python's memory is the same
    # for 8 MB and 24 MB of text, and a fraction of either.
    line = SAMPLE.read_text(encoding="utf-8")[:4000]
    peaks = []
    for copies in (2000, 6000):
        path = tmp_path / f"big{copies}.txt"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(copies):
                f.write(f"{i} {line}\n")
        size = path.stat().st_size
        tracemalloc.start()
        td = prepare_data(path, tok, cache_dir=tmp_path / f"cache{copies}", chunk_bytes=1 << 14, progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert td.meta["train_bytes"] + td.meta["val_bytes"] == size
    assert size > 24e6
    assert peaks[1] < 1.25 * peaks[0] and peaks[0] < 0.6 * 8e6, f"peaks {peaks[0] / 1e6:.1f} and {peaks[1] / 1e6:.1f} MB"


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gptlite.data", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_success_and_reuse(tmp_path, capsys, monkeypatch):
    # The real `python -m gptlite.data` process once; the second run, which reuses its cache, in-process.
    folder = corpus(tmp_path)
    r = run_cli("--data", str(folder), "--out", str(tmp_path / "run"), "--vocab-size", "800", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "bytes/token" in r.stdout
    assert {"tokenizer.json", "tokenizer_config.json", "tokenizer_training.json"} <= {p.name for p in (tmp_path / "run").iterdir()}
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(main, ["--data", str(folder), "--out", str(tmp_path / "run"), "--vocab-size", "800", "--quiet"], capsys)
    assert code == 0 and out.splitlines()[3] == r.stdout.splitlines()[3], err      # the same cache line


@pytest.mark.parametrize("setup,message", [
    (lambda p: (p / "d").mkdir(), "is empty"),
    (lambda p: write(p / "d" / "x.md", "no text here"), "has no .txt files"),
    (lambda p: (p / "d").mkdir() or (p / "d" / "x.txt").write_bytes(b"abc\xff"), "not valid UTF-8 at byte 3"),
    (lambda p: write(p / "d" / "x.txt", "tiny\n"), "too small to split"),
])
def test_cli_bad_input_exit_2_one_line(tmp_path, setup, message, capsys, monkeypatch):
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(main, ["--data", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--vocab-size", "300",
                                   "--quiet"], capsys)
    assert code == 2
    assert err.startswith("gptlite-prepare: error:") and message in err
    assert err.strip().count("\n") == 0


def test_cli_vocab_mismatch(tmp_path, capsys, monkeypatch):
    folder = corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["--data", str(folder), "--out", str(tmp_path / "run"), "--quiet"]
    assert run_main(main, [*args, "--vocab-size", "400"], capsys)[0] == 0
    code, _, err = run_main(main, [*args, "--vocab-size", "900"], capsys)
    assert code == 2 and "vocab_size=400, not 900" in err


def test_prepare_trains_then_loads(tmp_path):
    tok1, td1 = prepare(SAMPLE, tmp_path / "run", vocab_size=700, progress=False)
    tok2, td2 = prepare(SAMPLE, tmp_path / "run", vocab_size=700, progress=False)
    assert td1.path == td2.path and tok1.encode("hello there") == tok2.encode("hello there")


def test_tinyshakespeare(tmp_path):
    tok, td = prepare(SHAKESPEARE, tmp_path / "run", vocab_size=2000, progress=False)
    assert td.meta["train_bytes"] + td.meta["val_bytes"] == 1_115_394
    assert 2.5 < (td.meta["train_bytes"] + td.meta["val_bytes"]) / (td.meta["train_tokens"] + td.meta["val_tokens"]) < 4.5


def test_large_vocab_uses_uint32(tmp_path):
    # A byte-level BPE whose vocabulary is larger than uint16 can index (the extra tokens are never produced).
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from gptlite.tokenizer import bytes_to_unicode, wrap_tokenizer
    vocab = {EOT: 0, **{c: i + 1 for i, c in enumerate(bytes_to_unicode().values())}}
    vocab.update({f"<unused{i}>": len(vocab) + i for i in range(70_000 - len(vocab))})
    inner = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    inner.decoder = decoders.ByteLevel()
    inner.add_special_tokens([EOT])
    big = wrap_tokenizer(inner)
    assert len(big) == 70_000
    td = prepare_data(SAMPLE, big, cache_dir=tmp_path / "cache", progress=False)
    assert td.train.dtype == np.uint32 and td.meta["dtype"] == "uint32"
    assert big.decode(np.concatenate([td.train, td.val]).tolist()) == SAMPLE.read_text(encoding="utf-8") + EOT


def test_a_truncated_cache_is_rebuilt(tok, tmp_path):
    td = prepare_data(SAMPLE, tok, cache_dir=tmp_path / "cache", progress=False)
    expected = np.array(td.train)
    with open(td.path / "train.bin", "r+b") as f: f.truncate(f.seek(0, 2) // 2)   # a crash or a full disk cut it short
    with pytest.raises(CacheDamaged, match="the cache is damaged"): TokenData.load(td.path, tok)
    again = prepare_data(SAMPLE, tok, cache_dir=tmp_path / "cache", progress=False)   # noticed, and tokenized again
    assert np.array_equal(np.array(again.train), expected)


def test_a_file_that_changes_while_it_is_tokenized_is_a_clear_error(tok, tmp_path, monkeypatch):
    import gptlite.data
    path = write(tmp_path / "d" / "a.txt", SAMPLE.read_text(encoding="utf-8"))
    real = gptlite.data.encode_corpus
    def and_meanwhile(*a, **kw):
        yield from real(*a, **kw)
        with open(path, "a", encoding="utf-8") as f: f.write("one more line\n")   # another program appends
    monkeypatch.setattr(gptlite.data, "encode_corpus", and_meanwhile)
    with pytest.raises(DataError, match="changed while it was being tokenized"):
        prepare_data(tmp_path / "d", tok, cache_dir=tmp_path / "cache", progress=False)
    assert not [p for p in (tmp_path / "cache").iterdir()]            # no cache that would not match its fingerprint


def test_default_data_is_yours_else_shipped(tmp_path, monkeypatch, capsys):
    # Without --data: the user's .txt files in data/ (never the shipped corpora mixed in), else Tiny Shakespeare.
    from gptlite.data import default_data, EXAMPLES, DEFAULT_CORPUS
    examples = tmp_path / "data" / EXAMPLES; examples.mkdir(parents=True)
    (examples / DEFAULT_CORPUS).write_text(SHAKESPEARE.read_text()[:20_000])
    (examples / "sample.txt").write_text(SAMPLE.read_text()[:5_000])
    monkeypatch.chdir(tmp_path)
    files, source = default_data()
    assert files == [Path("data") / EXAMPLES / DEFAULT_CORPUS] and "shipped" in source
    code, out, _ = run_main(main, ["--out", "run1", "--vocab-size", "300", "--quiet"], capsys)
    assert code == 0 and out.startswith("data: data/examples/tinyshakespeare.txt") and "20,000 bytes" in out
    (tmp_path / "data" / "mine").mkdir(); (tmp_path / "data" / "mine" / "notes.txt").write_text(SAMPLE.read_text()[:30_000])
    code, out, _ = run_main(main, ["--out", "run2", "--vocab-size", "300", "--quiet"], capsys)
    assert code == 0 and out.startswith("data: your 1 file(s) in data/") and "30,000 bytes" in out
    (tmp_path / "data" / "mine" / "notes.txt").unlink(); (examples / DEFAULT_CORPUS).unlink()
    code, _, err = run_main(main, ["--out", "run3", "--quiet"], capsys)
    assert code == 2 and "has no .txt files" in err
    monkeypatch.chdir(tmp_path / "data")                    # run from elsewhere: a clear error, not a traceback
    code, _, err = run_main(main, ["--out", "run4", "--quiet"], capsys)
    assert code == 2 and "data/ does not exist here" in err


def test_no_progress_bars_off_a_terminal(tmp_path, capfd):
    # progress=True, but stderr is not a terminal (a notebook, a log file): neither tqdm's bar nor the tokenizer
    # trainer's (drawn by Rust straight onto file descriptor 2) may appear, or the saved output holds a frozen bar
    prepare(SAMPLE, tmp_path / "run", vocab_size=400, progress=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_prepare_trains_the_tokenizer_on_the_training_split_only(tmp_path):
    # a word found only in the validation split (the last 10%) gets no merges, so it is spelled in many pieces
    write(tmp_path / "c.txt", "common words here\n" * 90 + "zyzzyvaquux words\n" * 10)
    tok, td = prepare(tmp_path / "c.txt", tmp_path / "run", vocab_size=300, progress=False)
    assert len(tok.encode("zyzzyvaquux")) > 3 and len(tok.encode("common")) == 1


def test_split_pieces_labels_every_piece(tmp_path):
    # the split is the last val_fraction of the bytes, moved to a line start; None marks the end of each file
    a = write(tmp_path / "a.txt", "one\ntwo\nthree\n")
    b = write(tmp_path / "b.txt", "four\nfive\nsix seven\n")
    for chunk_bytes in (4, 8, 1 << 16):
        pieces = list(split_pieces([a, b], val_fraction=0.3, chunk_bytes=chunk_bytes))
        assert "".join(t for s, t in pieces if s == "val" and t) == "six seven\n"
        assert "".join(t for _, t in pieces if t) == a.read_text() + b.read_text()
        assert [s for s, t in pieces if t is None] == ["train", "val"]
        assert all(t != "" for _, t in pieces)                     # no empty pieces
        labels = [s for s, _ in pieces]
        assert labels == sorted(labels, key=lambda s: s == "val")  # train pieces, then val pieces


def test_training_text_stops_where_a_file_ends_at_the_split(tmp_path):
    # 90 + 10 bytes: the split falls exactly where the first file ends, so the tokenizer reads none of the second
    f1, f2 = write(tmp_path / "f1.txt", "x" * 89 + "\n"), write(tmp_path / "f2.txt", "y" * 9 + "\n")
    assert "".join(training_text([f1, f2])) == f1.read_text()
    pieces = list(split_pieces([f1, f2]))
    assert "".join(t for s, t in pieces if s == "val" and t) == f2.read_text()


def test_encode_corpus_gives_the_tokenizers_ids(tok, tmp_path):
    folder = corpus(tmp_path)
    files = find_text_files(folder)
    encoded = list(encode_corpus(files, tok, chunk_bytes=1024))
    pieces = list(split_pieces(files, chunk_bytes=1024))
    assert [s for s, _, _ in encoded] == [s for s, _ in pieces]
    assert [ids for _, ids, _ in encoded] == [[tok.eos_token_id] if t is None else tok.encode(t) for _, t in pieces]
    assert sum(n for _, _, n in encoded) == sum(f.stat().st_size for f in files)
    (tmp_path / "zero.txt").write_bytes(b"")
    with pytest.raises(DataError, match="the corpus is empty"):
        list(encode_corpus([tmp_path / "zero.txt"], tok))
    with pytest.raises(DataError, match="too small to split"):
        list(encode_corpus([write(tmp_path / "one.txt", "Just one line.\n")], tok))


def test_a_fast_encoder_that_disagrees_is_not_used(tok, tmp_path, monkeypatch):
    import gptlite.data
    class Wrong:
        def encode_ordinary(self, text): return [1, 2, 3]
        def encode_ordinary_batch(self, texts, num_threads): return [[1, 2, 3] for _ in texts]
    monkeypatch.setattr(gptlite.data, "fast_encoder", lambda tokenizer: Wrong())
    path = write(tmp_path / "a.txt", SAMPLE.read_text(encoding="utf-8")[:5000])
    with pytest.warns(UserWarning, match="tiktoken's ids differ"):
        encoded = list(encode_corpus([path], tok))
    assert [ids for _, ids, _ in encoded] == [[tok.eos_token_id] if t is None else tok.encode(t)
                                              for _, t in split_pieces([path])]


def test_write_cache_is_all_or_nothing(tok, tmp_path):
    path = write(tmp_path / "a.txt", SAMPLE.read_text(encoding="utf-8")[:5000])
    meta = dict(format=CACHE_FORMAT, tokenizer="x", vocab_size=len(tok), dtype="uint16")
    written = write_cache(tmp_path / "c" / "t", encode_corpus([path], tok), meta)
    assert written["train_bytes"] + written["val_bytes"] == path.stat().st_size
    assert json.loads((tmp_path / "c" / "t" / "meta.json").read_text()) == written
    assert (tmp_path / "c" / "t" / "train.bin").stat().st_size == 2 * written["train_tokens"]
    td = TokenData.load(tmp_path / "c" / "t")
    assert tok.decode(np.concatenate([td.train, td.val]).tolist()) == path.read_text(encoding="utf-8") + EOT
    # a second writer of the same folder keeps the first one's cache and leaves no temporary folder
    assert write_cache(tmp_path / "c" / "t", encode_corpus([path], tok), meta) == written   # the kept cache's meta
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["t"]
    # a failing check, or a failure while encoding, leaves nothing
    def fail(): raise DataError("no")
    with pytest.raises(DataError, match="no"):
        write_cache(tmp_path / "c" / "u", encode_corpus([path], tok), meta, check=fail)
    (tmp_path / "bad.txt").write_bytes(b"ok\n" * 100 + b"\xff")
    with pytest.raises(DataError, match="not valid UTF-8"):
        write_cache(tmp_path / "c" / "v", encode_corpus([tmp_path / "bad.txt"], tok), meta)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["t"]


def test_a_cache_of_another_format_is_refused(tok, tmp_path):
    td = prepare_data(SAMPLE, tok, cache_dir=tmp_path / "cache", progress=False)
    meta = json.loads((td.path / "meta.json").read_text()) | {"format": CACHE_FORMAT + 1}
    (td.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="another version of gptlite"):
        TokenData.load(td.path, tok)


def test_prepare_refuses_a_tokenizer_trained_on_other_text(tmp_path, capsys, monkeypatch):
    # a run folder's tokenizer is reused only for the text (and val_fraction) it was trained on
    text = SAMPLE.read_text(encoding="utf-8")
    mine, other = write(tmp_path / "mine.txt", text[:20_000]), write(tmp_path / "other.txt", text[20_000:40_000])
    prepare(mine, tmp_path / "run", vocab_size=300, progress=False)
    info = json.loads((tmp_path / "run" / "tokenizer_training.json").read_text())
    assert info["val_fraction"] == 0.1 and len(info["corpus"]) == 16
    prepare(mine, tmp_path / "run", vocab_size=300, progress=False)               # the same text: reused
    with pytest.raises(DataError, match=r"trained on other text \(corpus=.*use another output folder"):
        prepare(other, tmp_path / "run", vocab_size=300, progress=False)
    with pytest.raises(DataError, match=r"val_fraction=0.1, not 0.2"):             # it has read today's validation text
        prepare(mine, tmp_path / "run", vocab_size=300, val_fraction=0.2, progress=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(main, ["--data", str(other), "--out", "run", "--vocab-size", "300", "--quiet"], capsys)
    assert code == 2 and "trained on other text" in err and err.strip().count("\n") == 0
    # a run folder written by an older gptlite records no fingerprint: its tokenizer is still used
    older = {k: info[k] for k in ("vocab_size", "n_tokens", "seconds", "corpus_bytes")}
    (tmp_path / "run" / "tokenizer_training.json").write_text(json.dumps(older))
    tok, td = prepare(other, tmp_path / "run", vocab_size=300, progress=False)
    assert len(tok) == info["n_tokens"] and td.meta["n_files"] == 1
