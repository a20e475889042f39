"Sampling tests: the logits rules keep exactly the right tokens, UTF-8-safe streaming, stop strings across pieces."
import random

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from gptlite.attention import SlotKVCache
from gptlite.model import GPT, GPTConfig
from gptlite.sampling import (Decoder, StopChecker, TextStreamer, apply_repetition_penalty, apply_top_k, apply_top_p,
                              candidate_probs, decoder_for, draw, process_logits, sample_next, token_bytes_table)
from gptlite.tokenizer import train_tokenizer

from conftest import SAMPLE, TINY_CONTEXT, run_main


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
    assert torch.equal(sample_next(process_logits(x, 0.0, top_k=3, top_p=0.5), greedy=True), x.argmax(-1))


def test_same_seed_same_draws_and_global_rng_untouched():
    x = torch.randn(3, 500)
    state = torch.get_rng_state()
    draws = [sample_next(process_logits(x, 1.0, top_p=0.95), generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(torch.get_rng_state(), state)


@settings(max_examples=40, deadline=None)
@given(temperature=st.floats(0.05, 3.0), top_k=st.integers(0, 120), top_p=st.floats(0.01, 1.0), seed=st.integers(0, 99))
def test_candidate_probs_is_the_distribution_of_process_logits(temperature, top_k, top_p, seed):
    x = torch.randn(3, 100, generator=torch.Generator().manual_seed(seed)) * 3      # continuous: no ties at the k-th
    ids, probs = candidate_probs(x, temperature, top_k, top_p)
    full = probs if ids is None else torch.zeros_like(x).scatter(1, ids, probs)
    torch.testing.assert_close(full, torch.softmax(process_logits(x, temperature, top_k, top_p), -1), atol=1e-6, rtol=1e-5)


def test_draw_follows_the_probabilities_and_never_draws_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]])
    ids = torch.tensor([[10, 11, 12, 13, 14, 15]])
    u = torch.linspace(0, 1, 10001)[:-1]                       # evenly spread uniforms: exact frequencies
    tokens = torch.cat([draw(ids, probs, u[i:i + 1]) for i in range(len(u))])
    counts = torch.bincount(tokens - 10, minlength=6).float() / len(u)
    torch.testing.assert_close(counts, probs[0], atol=2e-4, rtol=0)
    assert draw(None, probs, torch.tensor([0.0])).item() == 1 and draw(None, probs, torch.tensor([1 - 1e-7])).item() == 4


@pytest.mark.parametrize("kw", [dict(), dict(pos_encoding="learned", bias=False), dict(n_heads=2, d_ff=96)])
@pytest.mark.parametrize("parts", [1, 2, 4])
def test_decoder_step_equals_the_model_with_a_cache(kw, parts):
    torch.manual_seed(parts)
    model = GPT(GPTConfig(**{**dict(vocab_size=200, max_length=24, n_layers=2, n_heads=4, d_model=32, dropout=0.0), **kw})).eval()
    decoder = Decoder(model, parts=parts)
    idx = torch.randint(0, 200, (3, 20))
    lengths = [5, 9, 2]                                          # rows at different positions
    a, b = SlotKVCache(2, 24, 3), SlotKVCache(2, 24, 3)
    for row, n in enumerate(lengths):
        with torch.no_grad():
            model(idx[row:row + 1, :n], kv_cache=a.select(row)); model(idx[row:row + 1, :n], kv_cache=b.select(row))
    a.select(None); b.select(None)
    for t in range(6):
        tokens = torch.stack([idx[row, n + t] for row, n in enumerate(lengths)])
        with torch.no_grad(): expected = model(tokens[:, None], kv_cache=a)[0][:, -1]
        torch.testing.assert_close(decoder.step(tokens, b), expected, atol=1e-5, rtol=1e-4)
    assert torch.equal(a.lengths, b.lengths)


def test_decoder_is_rebuilt_when_the_weights_change():
    model = GPT(GPTConfig(vocab_size=50, max_length=8, n_layers=1, n_heads=2, d_model=16)).eval()
    first = decoder_for(model)
    assert decoder_for(model) is first
    model.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})
    assert decoder_for(model) is not first


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


# --- generation with a real (tiny, briefly trained) checkpoint: the session's shared one -----------------------------
import os
import subprocess
import sys

from gptlite.sampling import generate, main, stream_generate


PROMPTS = ["The", "In the morning, the baker opened", "", "She said: \u201cno\u201d, and"]


@pytest.mark.parametrize("settings_", [dict(temperature=0), dict(temperature=0.9, top_k=20, seed=11),
                                       dict(temperature=1.2, top_p=0.9, repetition_penalty=1.3, seed=5)])
def test_batch_equals_each_prompt_alone(tiny_model, settings_):
    model, tok = tiny_model
    batch = generate(model, tok, PROMPTS, max_new_tokens=25, **settings_)
    for b, prompt in enumerate(PROMPTS):
        alone = generate(model, tok, prompt, max_new_tokens=25, **{**settings_, "seed": settings_.get("seed", 0) + b})[0]
        assert (batch[b].text, batch[b].token_ids, batch[b].finish_reason) == (alone.text, alone.token_ids, alone.finish_reason)


def test_seed_reproducible_and_seeds_differ(tiny_model):
    model, tok = tiny_model
    a = generate(model, tok, "The", max_new_tokens=30, temperature=1.0, seed=1)[0].text
    assert a == generate(model, tok, "The", max_new_tokens=30, temperature=1.0, seed=1)[0].text
    assert a != generate(model, tok, "The", max_new_tokens=30, temperature=1.0, seed=2)[0].text


def test_stream_pieces_join_to_the_completion_and_logprobs_are_consistent(tiny_model):
    model, tok = tiny_model
    pieces = list(stream_generate(model, tok, "The baker", max_new_tokens=20, temperature=0.8, seed=3, top_logprobs=3))
    c = generate(model, tok, "The baker", max_new_tokens=20, temperature=0.8, seed=3)[0]
    assert "".join(p.text for p in pieces) == c.text and pieces[-1].finish_reason == c.finish_reason
    for p in pieces:
        assert p.logprob <= 0 and len(p.top_logprobs) == 3
        assert max(p.top_logprobs.values()) >= p.logprob - 1e-6
    ids = tok.encode("The baker") + [p.token_id for p in pieces]
    with torch.no_grad(): logp = torch.log_softmax(model(torch.tensor([ids]))[0][0].float(), -1)   # (T, V), no cache
    start = len(tok.encode("The baker")) - 1
    expected = [logp[start + i, p.token_id].item() for i, p in enumerate(pieces)]
    assert [p.logprob for p in pieces] == pytest.approx(expected, abs=1e-4)   # the model's own log-probabilities


def test_cli_streams_the_same_text_as_no_stream(tiny_run, capsys):
    args = ["--checkpoint", str(tiny_run), "--prompt", "The baker", "--max-new-tokens", "15", "--seed", "4", "--num-samples", "2"]
    (code_a, a, err_a), (code_b, b, err_b) = run_main(main, args, capsys), run_main(main, [*args, "--no-stream"], capsys)
    assert code_a == 0 and code_b == 0, err_a + err_b
    assert a == b and a.count("--- sample") == 2


def test_cli_interactive_quits_on_empty_line(tiny_run):
    # The one real `gptlite-generate` process: a prompt, then an empty line to quit.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "gptlite.sampling", "--checkpoint", str(tiny_run), "--interactive",
                        "--max-new-tokens", "5", "--seed", "0"], input="The\n\n", capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.count(">>> ") == 2, r.stderr


@pytest.mark.parametrize("args, message", [
    (["--temperature", "-1"], "temperature must be in [0, 100]"),
    (["--top-p", "0"], "top_p must be in (0, 1]"),
    (["--top-k", "-3"], "top_k must be >= 0"),
    (["--max-new-tokens", "0"], "max_new_tokens must be at least 1"),
    (["--num-samples", "0"], "--num-samples must be at least 1"),
    (["--interactive", "--creative"], "cannot be used together"),
    (["--prompt", "word " * (TINY_CONTEXT + 50)], f"the model's context is {TINY_CONTEXT} tokens"),
])
def test_cli_bad_input_exit_2(tiny_run, args, message, capsys):
    code, _, err = run_main(main, ["--checkpoint", str(tiny_run), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_no_checkpoint_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(main, [], capsys)
    assert code == 2 and "train one with `gptlite-train`" in err


def test_cli_int8(tiny_run, capsys):
    code, out, err = run_main(main, ["--checkpoint", str(tiny_run), "--prompt", "The baker", "--max-new-tokens", "10",
                                     "--seed", "1", "--quantize", "int8"], capsys)
    assert code == 0 and out.startswith("The baker"), err
    code, _, err = run_main(main, ["--checkpoint", str(tiny_run), "--quantize", "int8", "--device", "meta"], capsys)
    assert code == 2 and "CPU only" in err


def test_int8_model_decodes_like_its_forward(tiny_model):
    from gptlite.sampling import Decoder, quantize_int8
    from gptlite.attention import SlotKVCache
    model, tok = tiny_model
    q = quantize_int8(model)
    idx = torch.randint(0, 400, (1, 12))
    a, b = (SlotKVCache(model.config.n_layers, model.config.max_length, 1) for _ in range(2))
    with torch.no_grad():
        q(idx[:, :11], kv_cache=a.select(0)); q(idx[:, :11], kv_cache=b.select(0))
        expected = q(idx[:, 11:], kv_cache=a)[0][0, -1]       # int8 quantizes each call's activations: compare one
    torch.testing.assert_close(Decoder(q).step(idx[0, 11:], b)[0], expected, atol=1e-4, rtol=1e-4)   # row with one row
    assert (q(idx)[0] - model(idx)[0]).abs().max() < 0.5                        # close to the float model


def test_latest_checkpoint_ignores_half_written_dot_folders(tiny_run, tmp_path):
    import shutil
    from gptlite.sampling import latest_checkpoint
    root = tmp_path / "saved_models"
    shutil.copytree(tiny_run, root / "run")
    shutil.copytree(tiny_run / "last", root / "run" / ".last.tmp-crashed")    # newer, but a save's temporary folder
    shutil.copytree(tiny_run, root / ".hidden-run")
    assert latest_checkpoint(root) == root / "run"
