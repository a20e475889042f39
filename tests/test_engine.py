"Engine tests: the slot cache and the decoder equal the plain model, batches equal each prompt alone, the command."
import os
import subprocess
import sys

import pytest
import torch

from gptlite.engine import Decoder, SlotKVCache, decoder_for, generate, main, stream_generate
from gptlite.model import GPT, GPTConfig
from gptlite.sampling import sample

from conftest import TINY_CONTEXT, run_main


@pytest.mark.parametrize("kw", [dict(), dict(pos_encoding="learned", bias=False), dict(n_heads=2, d_ff=96),
                                dict(activation="gelu_tanh")])
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
    r = subprocess.run([sys.executable, "-m", "gptlite.engine", "--checkpoint", str(tiny_run), "--interactive",
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
    from gptlite.engine import quantize_int8
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
    from gptlite.engine import latest_checkpoint
    root = tmp_path / "saved_models"
    shutil.copytree(tiny_run, root / "run")
    shutil.copytree(tiny_run / "last", root / "run" / ".last.tmp-crashed")    # newer, but a save's temporary folder
    shutil.copytree(tiny_run, root / ".hidden-run")
    assert latest_checkpoint(root) == root / "run"


@pytest.mark.parametrize("settings_", [dict(temperature=0), dict(temperature=0.9, top_k=20, seed=11)])
def test_engine_gives_what_the_plain_loop_gives(tiny_model, settings_):
    model, tok = tiny_model
    for prompt in PROMPTS:
        plain = "".join(p.text for p in sample(model, tok, prompt, max_new_tokens=25, **settings_))
        assert generate(model, tok, prompt, max_new_tokens=25, **settings_)[0].text == plain
