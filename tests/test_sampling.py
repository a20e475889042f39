"Sampling tests: the logits rules keep exactly the right tokens, UTF-8-safe streaming, stop strings across pieces."
import random

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from gptlite.model import to_hf
from gptlite.sampling import (StopChecker, TextStreamer, apply_greedy, apply_repetition_penalty, apply_top_k,
                              apply_top_p, process_logits, sample, sample_next, token_bytes_table)
from gptlite.tokenizer import train_tokenizer

from conftest import SAMPLE, TINY_CONTEXT


@pytest.fixture(scope="module")
def small_tok():
    return train_tokenizer([SAMPLE.read_text()], vocab_size=600)


def test_top_k_keeps_exactly_the_k_largest():
    torch.manual_seed(0)
    x = torch.randn(8, 300)
    for k in (1, 5, 50, 299):
        kept = torch.isfinite(apply_top_k(x, k))
        expected = torch.zeros_like(kept).scatter(1, x.topk(k, dim=1).indices, True)
        assert torch.equal(kept, expected)


def test_top_p_keeps_the_smallest_nucleus():
    torch.manual_seed(1)
    x = torch.randn(8, 300) * 2
    for p in (0.1, 0.5, 0.9, 0.99):
        kept = torch.isfinite(apply_top_p(x, p))
        probs = torch.softmax(x, -1)
        for row in range(x.size(0)):
            order = probs[row].argsort(descending=True).tolist()
            total, expected = 0.0, set()
            for i in order:                      # add tokens until the mass reaches p
                expected.add(i); total += probs[row, i].item()
                if total >= p: break
            assert set(kept[row].nonzero().flatten().tolist()) == expected


def test_greedy_is_argmax_and_temperature_zero_ignores_filters():
    x = torch.randn(4, 100)
    assert torch.equal(torch.isfinite(apply_greedy(x)).sum(-1), torch.ones(4, dtype=torch.long))
    for seed in range(20):                       # temperature 0 leaves one token: every draw is the argmax
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(sample_next(process_logits(x, 0.0, top_k=3, top_p=0.5), g), x.argmax(-1))


def test_greedy_applies_the_repetition_penalty_first():
    x, seen = torch.tensor([[2.0, 1.9, 0.0]]), torch.tensor([[True, False, False]])
    assert int(sample_next(process_logits(x, 0.0))) == 0
    assert int(sample_next(process_logits(x, 0.0, repetition_penalty=1.3, seen=seen))) == 1   # 2.0 / 1.3 < 1.9


def test_same_seed_same_draws_and_global_rng_untouched():
    x = torch.randn(3, 500)
    state = torch.get_rng_state()
    draws = [sample_next(process_logits(x, 1.0, top_p=0.95), generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(torch.get_rng_state(), state)


def test_repetition_penalty_only_touches_seen_tokens():
    x = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    assert torch.equal(apply_repetition_penalty(x, seen, 2.0), torch.tensor([[1.0, -4.0, 1.0, -1.0]]))


@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=60))
def test_streaming_never_splits_a_character(small_tok, text):
    assume("<|endoftext|>" not in text)      # the end-of-text token is never printed
    table = token_bytes_table(small_tok)
    streamer = TextStreamer(table)
    pieces = [streamer.push(i) for i in small_tok.encode(text)]
    pieces.append(streamer.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces) or "\ufffd" in text


def test_streaming_case_with_a_character_split_across_tokens(small_tok):
    table = token_bytes_table(small_tok)
    ids = small_tok.encode("東京 🙂 naïve")
    assert any(table[i] and (table[i][0] & 0xC0) == 0x80 for i in ids)   # some token starts inside a character
    streamer = TextStreamer(table)
    pieces = [streamer.push(i) for i in ids]
    assert "".join(pieces) + streamer.flush() == "東京 🙂 naïve" and not any("\ufffd" in p for p in pieces)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab \nE", max_size=40), stops=st.lists(st.text(alphabet="ab \nE", min_size=1, max_size=4), max_size=3),
       seed=st.integers(0, 10**6))
def test_stop_checker_matches_a_reference_for_any_split(text, stops, seed):
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    checker = StopChecker(stops)
    out = "".join(checker.push(p) for p in pieces)
    if not checker.stopped: out += checker.flush()
    hits = [(text.find(s) + len(s), text.find(s)) for s in stops if s in text]   # the stop completed first
    expected = text[:min(hits)[1]] if hits else text
    assert out == expected and checker.stopped == bool(hits)


class CountingStr(str):
    "A string that counts the characters read from it by index."
    reads = 0
    def __getitem__(self, i):
        CountingStr.reads += 1
        return super().__getitem__(i)


def test_stop_checker_work_is_linear_in_the_text_not_the_stop_length():
    # a hostile stop list: long strings that the text keeps nearly matching; the check reads a few characters of
    # each stop per character of text, where trying every prefix on every token would read billions
    stops = [CountingStr("ab" * 50_000 + "c"), CountingStr("a" * 99_999 + "b"), CountingStr("ab" * 500 + "c")]
    checker = StopChecker(stops)
    CountingStr.reads, text = 0, 0
    for _ in range(500):
        out = checker.push("ab")
        text += 2
    assert CountingStr.reads <= 4 * text * len(stops) and not checker.stopped
    assert len(checker.pending) == 1000 and out == ""             # "abab...ab" may still become a stop
    assert checker.push("c") == "" and checker.stopped            # ... the third one does: nothing was before it


# --- generation with a real (tiny, briefly trained) checkpoint: the session's shared one -----------------------------


def test_sample_greedy_is_the_argmax_of_the_full_forward_pass(tiny_model):
    model, tok = tiny_model
    ids = tok.encode("The baker")
    for piece in sample(model, tok, "The baker", max_new_tokens=15, temperature=0):
        with torch.no_grad(): assert piece.token_id == int(model(torch.tensor([ids]))[0][0, -1].argmax())
        ids.append(piece.token_id)


def test_sample_draws_with_process_logits_and_sample_next(tiny_model):
    # the loop is the lesson's pieces: by hand, without a cache, the same seed gives the same tokens
    model, tok = tiny_model
    settings_ = dict(temperature=0.9, top_k=30, top_p=0.95, repetition_penalty=1.2)
    g, ids = torch.Generator().manual_seed(4), tok.encode("The baker")
    seen = torch.zeros(1, model.config.vocab_size, dtype=torch.bool); seen[0, ids] = True
    by_hand = []
    for _ in range(15):
        with torch.no_grad(): logits = model(torch.tensor([ids]))[0][:, -1]
        token = int(sample_next(process_logits(logits, seen=seen, **settings_), generator=g))
        by_hand.append(token); ids.append(token); seen[0, token] = True
    chunks = list(sample(model, tok, "The baker", max_new_tokens=15, seed=4, **settings_))
    assert [c.token_id for c in chunks] == by_hand[:len(chunks)]
    assert chunks[-1].finish_reason is not None and all(c.finish_reason is None for c in chunks[:-1])


def test_greedy_with_repetition_penalty_matches_hf_generate(tiny_model):
    # the loop's `seen` bookkeeping (prompt included, updated every step) against transformers' own generate
    model, tok = tiny_model
    hf = to_hf(model, tok)
    for prompt in ("The baker", "A"):
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, repetition_penalty=1.3,
                                 max_new_tokens=60, pad_token_id=tok.eos_token_id)[0, ids.size(1):].tolist()
        ours = [c.token_id for c in sample(model, tok, prompt, max_new_tokens=60, temperature=0, repetition_penalty=1.3)]
        assert ours == theirs
        assert ours != [c.token_id for c in sample(model, tok, prompt, max_new_tokens=60, temperature=0)]  # it bites


def test_sample_ends_when_the_context_is_full(tiny_model):
    model, tok = tiny_model
    chunks = list(sample(model, tok, "The", max_new_tokens=10 * TINY_CONTEXT, temperature=0))
    assert len(tok.encode("The")) + len(chunks) == TINY_CONTEXT and chunks[-1].finish_reason == "length"


def test_sample_seeds_stops_and_errors(tiny_model):
    model, tok = tiny_model
    text = lambda **kw: "".join(p.text for p in sample(model, tok, "The", **kw))
    a = text(max_new_tokens=30, temperature=1.0, seed=1)
    assert a == text(max_new_tokens=30, temperature=1.0, seed=1) != text(max_new_tokens=30, temperature=1.0, seed=2)
    free = text(max_new_tokens=30, temperature=0)
    pieces = list(sample(model, tok, "The", max_new_tokens=30, temperature=0, stop=free[5:8]))
    assert "".join(p.text for p in pieces) == free[:free.index(free[5:8])] and pieces[-1].finish_reason == "stop"
    with pytest.raises(ValueError, match="top_k must be >= 0"): next(sample(model, tok, "The", top_k=-1))
    with pytest.raises(ValueError, match=f"the model's context is {TINY_CONTEXT} tokens"):
        next(sample(model, tok, "word " * (TINY_CONTEXT + 5)))
