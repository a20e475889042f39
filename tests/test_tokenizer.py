"Tokenizer tests: round trips on arbitrary Unicode, special tokens, save/load, char-level errors."
import json

import pytest
from hypothesis import example, given, settings, strategies as st
from transformers import AutoTokenizer

from gptlite.tokenizer import (EOT, CharTokenizer, bpe_decode_by_hand, bpe_encode_by_hand, bytes_per_token,
                               load_tokenizer, tokenizer_fingerprint, train_bpe_by_hand, train_tokenizer)

from conftest import SAMPLE, SHAKESPEARE


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_bpe_round_trip_any_unicode(tok, s):
    assert tok.decode(tok.encode(s)) == s


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "\n", "é", "🍞", "你", EOT, "\t", "\r\n", "'s"]), max_size=60).map("".join))
def test_bpe_round_trip_tricky_pieces(tok, s):
    # Special tokens inside text, whitespace runs, multi-byte characters next to each other.
    assert tok.decode(tok.encode(s)) == s


def test_special_token(tok):
    assert tok.eos_token == tok.bos_token == tok.pad_token == EOT
    assert tok.encode(EOT) == [tok.eos_token_id] == [0]
    ids = tok.encode(f"one{EOT}two")
    assert ids.count(tok.eos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "onetwo"


def test_vocab_size_and_every_byte(tok):
    assert len(tok) == 1000
    # every one of the 256 bytes has a token, so no text is ever unknown
    assert tok.decode(tok.encode(bytes(range(128)).decode("ascii"))) == bytes(range(128)).decode("ascii")
    with pytest.raises(ValueError, match="at least 257"):
        train_tokenizer(["abc"], vocab_size=256)


def test_save_load_equal(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tmp_path.iterdir()}
    text = SAMPLE.read_text(encoding="utf-8")[:20000]
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
        assert loaded.eos_token_id == tok.eos_token_id
    assert tokenizer_fingerprint(load_tokenizer(tmp_path)) == tokenizer_fingerprint(tok)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["clean_up_tokenization_spaces"] is False


def test_bytes_per_token(tok):
    text = SAMPLE.read_text(encoding="utf-8")[:20000]
    assert bytes_per_token(tok, text) == len(text.encode("utf-8")) / len(tok.encode(text))
    assert bytes_per_token(tok, text) > 2          # a 1000-token vocabulary packs English well past a byte per token
    assert bytes_per_token(tok, "") == 0           # no division by zero on empty text


def test_vocabulary_sizes_are_reached_on_shakespeare():
    # min_frequency=2 caps the vocabulary; on Tiny Shakespeare's training split the cap lies above 8192
    text = SHAKESPEARE.read_text(encoding="utf-8")
    train = text[:int(len(text) * 0.9)]
    assert len(train_tokenizer([train], vocab_size=8192)) == 8192
    assert 8192 < len(train_tokenizer([train], vocab_size=100_000)) < 100_000


def test_load_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)


def test_training_is_deterministic():
    text = SAMPLE.read_text(encoding="utf-8")[:50000]
    a, b = train_tokenizer([text], vocab_size=600), train_tokenizer([text], vocab_size=600)
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=100))
def test_char_round_trip(s):
    ct = CharTokenizer.from_text(s)
    assert ct.decode(ct.encode(s)) == s
    assert ct.vocab_size == len(set(s))


def test_char_unknown_character(tmp_path):
    ct = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z' at position 2 is not in this tokenizer's vocabulary of 3"):
        ct.encode("abz")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ct.decode([3])
    ct.save(tmp_path / "c.json")
    assert CharTokenizer.load(tmp_path / "c.json").encode("cab") == ct.encode("cab")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_hand_bpe_round_trip(s):
    merges = train_bpe_by_hand("the theatre then there the other", 10)
    assert bpe_decode_by_hand(bpe_encode_by_hand(s, merges), merges) == s


def test_hand_bpe_compresses():
    text = SAMPLE.read_text(encoding="utf-8")[:3000]
    merges = train_bpe_by_hand(text, 50)
    assert len(merges) == 50
    assert len(bpe_encode_by_hand(text, merges)) < 0.7 * len(text.encode())


@pytest.mark.parametrize("corpus,vocab_size", [(SAMPLE, 300), (SAMPLE, 1000), (SAMPLE, 5000), (SHAKESPEARE, 8192)])
def test_fast_encoder_gives_identical_ids_on_the_corpus(corpus, vocab_size):
    # tiktoken merges by token rank, Hugging Face by merge rule: equal on trained vocabularies, checked on both corpora
    from gptlite.tokenizer import fast_encoder, train_tokenizer
    text = corpus.read_text(encoding="utf-8")
    tok = train_tokenizer([text], vocab_size=vocab_size)
    assert fast_encoder(tok).encode_ordinary(text) == tok.backend_tokenizer.encode(text, add_special_tokens=False).ids


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
@example("<|endoftext|>").via("the special token's text: one id on both sides, as the server encodes it")
@example("a<|endoftext|>b<|endoftext|>")
def test_fast_encoder_gives_identical_ids_on_random_unicode(tok, s):
    from gptlite.tokenizer import fast_encoder
    assert fast_encoder(tok).encode(s, allowed_special="all") == tok.backend_tokenizer.encode(s, add_special_tokens=False).ids
