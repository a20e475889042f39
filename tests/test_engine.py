"""Engine tests: the slot cache and the decoder equal the plain model, the fast draw has the distribution of the plain
loop's rules, batches equal each prompt alone, the command."""
import math
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gptlite.engine import (ENGINE_THREADS, LOGPROB_FLOOR, Decoder, EngineError, EngineStopped, QueueFull, Request, Scheduler, Sequence,
                            SlotKVCache, candidate_probs, decoder_for, draw, engine_for, generate, main, pick_tokens,
                            stream_generate)
from gptlite.model import GPT, GPTConfig
from gptlite.sampling import process_logits, sample, sample_next, token_bytes_table

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
    cache = SlotKVCache(2, 24, 3)
    with torch.no_grad():
        full = model(idx)[0]                                     # (3, 20, V): each row's whole sequence, no cache
        for row, n in enumerate(lengths): model(idx[row:row + 1, :n], kv_cache=cache.select(row))
    cache.select(None)
    for t in range(6):
        tokens = torch.stack([idx[row, n + t] for row, n in enumerate(lengths)])
        expected = torch.stack([full[row, n + t] for row, n in enumerate(lengths)])
        torch.testing.assert_close(decoder.step(tokens, cache), expected, atol=1e-5, rtol=1e-4)
    assert cache.lengths.tolist() == [n + 6 for n in lengths]


def test_slot_cache_refuses_a_step_without_the_rows_mask():
    model = GPT(GPTConfig(vocab_size=50, max_length=8, n_layers=1, n_heads=2, d_model=16, dropout=0.0)).eval()
    cache = SlotKVCache(1, 8, 2)
    with torch.no_grad():
        for row, n in enumerate((2, 4)): model(torch.zeros(1, n, dtype=torch.long), kv_cache=cache.select(row))
        cache.select(None)
        with pytest.raises(ValueError, match="needs each row.s mask"):
            model(torch.zeros(2, 1, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="needs each row's mask"):
            model.blocks[0].attn(torch.zeros(2, 1, 16), kv_cache=cache)
    assert cache.lengths.tolist() == [2, 4]                      # nothing was written


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


# --- the fast draw against the plain loop's rules ---------------------------------------------------------------------


def full_probs(ids, probs, vocab_size):
    return probs if ids is None else torch.zeros(probs.size(0), vocab_size).scatter(1, ids, probs)


@settings(max_examples=40, deadline=None)
@given(temperature=st.floats(0.05, 3.0), top_k=st.integers(0, 120), top_p=st.floats(0.01, 1.0),
       penalty=st.sampled_from([1.0, 0.8, 1.3]), seed=st.integers(0, 99))
def test_candidate_probs_is_the_distribution_of_process_logits(temperature, top_k, top_p, penalty, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 100, generator=g) * 3                    # continuous: no ties at the k-th
    seen = torch.rand(3, 100, generator=g) < 0.1
    ids, probs = candidate_probs(x, temperature, top_k, top_p, penalty, seen)
    torch.testing.assert_close(full_probs(ids, probs, 100),
                               torch.softmax(process_logits(x, temperature, top_k, top_p, penalty, seen), -1),
                               atol=1e-6, rtol=1e-5)


def test_draw_follows_the_probabilities_and_never_draws_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]])
    ids = torch.tensor([[10, 11, 12, 13, 14, 15]])
    u = torch.linspace(0, 1, 10001)[:-1]                       # evenly spread uniforms: exact frequencies
    tokens = draw(ids.expand(len(u), -1), probs.expand(len(u), -1), u)
    counts = torch.bincount(tokens - 10, minlength=6).float() / len(u)
    torch.testing.assert_close(counts, probs[0], atol=2e-4, rtol=0)
    assert draw(None, probs, torch.tensor([0.0])).item() == 1 and draw(None, probs, torch.tensor([1 - 1e-7])).item() == 4


def test_pick_tokens_rows_ignore_their_neighbours_and_report_the_models_logprob():
    torch.manual_seed(0)
    x, seen = torch.randn(5, 300) * 2, torch.rand(5, 300) < 0.05
    gens = lambda: [torch.Generator().manual_seed(7 + b) for b in range(5)]
    kw = dict(temperature=0.9, top_k=50, top_p=0.9, repetition_penalty=1.2)
    batch, logp = pick_tokens(x, gens(), seen=seen, **kw)
    alone = [pick_tokens(x[b:b + 1], [gens()[b]], seen=seen[b:b + 1], **kw)[0].item() for b in range(5)]
    assert batch.tolist() == alone
    torch.testing.assert_close(logp, torch.log_softmax(x, -1).gather(1, batch[:, None])[:, 0])
    assert torch.equal(pick_tokens(x, gens(), greedy=True, repetition_penalty=1.2, seen=seen)[0],
                       torch.where(seen, torch.where(x > 0, x / 1.2, x * 1.2), x).argmax(-1))


def test_sequence_stops_cuts_and_counts(tok):
    table, eot = token_bytes_table(tok), tok.convert_tokens_to_ids("<|endoftext|>")
    ids = tok.encode("To be, or not to be: that is the question.")
    def feed(tokens, **kw):
        row = Sequence(3, ids[:2], table, eot, **{**dict(stop=None, max_new_tokens=100, context=64), **kw})
        return [row.accept(t, -0.5) for t in tokens if row.finish_reason is None]
    pieces = feed(ids[2:], stop=["zz", ": that"])
    assert "".join(p.text for p in pieces) == tok.decode(ids[2:]).split(": that")[0]
    assert pieces[-1].finish_reason == "stop" and {p.row for p in pieces} == {3} and pieces[0].logprob == -0.5
    assert [p.finish_reason for p in feed(ids[2:], max_new_tokens=3)] == [None, None, "length"]
    assert len(feed(ids[2:], context=6)) == 4
    assert "".join(p.text for p in feed(ids[2:])) == tok.decode(ids[2:])


# --- the engine against the plain loop of 05_sampling: exact when greedy, the same distribution when sampling ---------


def test_engine_greedy_is_exactly_the_plain_loop(tiny_model):
    model, tok = tiny_model
    for prompt in PROMPTS:
        plain = list(sample(model, tok, prompt, max_new_tokens=25, temperature=0, repetition_penalty=1.2))
        fast = generate(model, tok, prompt, max_new_tokens=25, temperature=0, repetition_penalty=1.2)[0]
        assert fast.token_ids == [c.token_id for c in plain] and fast.text == "".join(c.text for c in plain)
        assert fast.finish_reason == plain[-1].finish_reason


@pytest.mark.parametrize("settings_", [dict(temperature=0.9, top_k=20), dict(temperature=1.0, top_p=0.9),
                                       dict(temperature=1.3, top_k=40, top_p=0.95, repetition_penalty=1.3)])
def test_engine_draws_from_the_plain_loops_distribution(tiny_model, settings_):
    model, tok = tiny_model
    for prompt in PROMPTS:
        ids = tok.encode(prompt) or [tok.convert_tokens_to_ids("<|endoftext|>")]
        with torch.no_grad(): logits = model(torch.tensor([ids]))[0][:, -1]
        seen = torch.zeros_like(logits, dtype=torch.bool); seen[0, ids] = True
        engine = full_probs(*candidate_probs(logits, seen=seen, **settings_), logits.size(-1))
        torch.testing.assert_close(engine, torch.softmax(process_logits(logits, seen=seen, **settings_), -1),
                                   atol=1e-5, rtol=0)


def test_engine_and_plain_draw_frequencies_agree(tiny_model):
    # 4000 next tokens each way; fixed seeds, so the chi-square bound (far beyond chance) cannot flake
    model, tok = tiny_model
    s, n = dict(temperature=0.8, top_k=8), 4000
    with torch.no_grad(): logits = model(torch.tensor([tok.encode("The baker")]))[0][:, -1]
    candidates, probs = candidate_probs(logits, **s)
    rows = logits.expand(n, -1)
    gens = lambda: [torch.Generator().manual_seed(i) for i in range(n)]
    engine = pick_tokens(rows, gens(), **s)[0]
    plain = sample_next(process_logits(rows, **s), generator=torch.Generator().manual_seed(0))
    wrong = pick_tokens(rows, gens(), temperature=1.3, top_k=8)[0]  # another temperature: another distribution
    def chi_square(tokens):
        assert torch.isin(tokens, candidates[0]).all()
        freq = (tokens[:, None] == candidates[0]).float().mean(0)
        return float(((freq - probs[0]) ** 2 / probs[0]).sum() * n)
    assert chi_square(engine) < 40 and chi_square(plain) < 40    # 7 degrees of freedom: 40 is p < 1e-5
    assert chi_square(wrong) > 40                                # and the test can tell another temperature apart


def test_stop_strings_from_the_command_line_keep_non_ascii():
    "`--stop` decodes backslash escapes only: `é` stays `é` (unicode_escape alone turned it into `Ã©`)."
    from gptlite.engine import decode_escapes
    assert decode_escapes("é\\n") == "é\n"
    assert decode_escapes("日本") == "日本"
    assert decode_escapes("a\\tb\\u00e9") == "a\tbé"
    assert decode_escapes("\\\\n") == "\\n"                       # an escaped backslash stays one backslash


# --- one engine: every synchronous call goes through the process's engine thread ------------------------------------


def run_on_new_thread(f):
    out = []
    t = threading.Thread(target=lambda: out.append(f()))
    t.start(); t.join()
    return out[0]


def test_a_new_thread_gets_the_same_text_decoded_on_the_engine_thread(tiny_model):
    model, tok = tiny_model
    engine = engine_for(model, tok)
    assert engine_for(model, tok) is engine and engine.health()["alive"]
    decoded_on, intra_op = [], set()
    def note(ids): decoded_on.append(threading.current_thread()); intra_op.add(torch.get_num_threads())
    engine.on_step = note
    try:
        kw = dict(max_new_tokens=20, temperature=0.9, top_k=30, seed=7)
        here = generate(model, tok, ["The baker", "She said"], **kw)
        there = run_on_new_thread(lambda: generate(model, tok, ["The baker", "She said"], **kw))
    finally: engine.on_step = None
    assert [c.text for c in here] == [c.text for c in there] and here[0].token_ids
    assert decoded_on and set(decoded_on) == {engine.thread} and engine.thread is not threading.current_thread()
    # the engine's thread runs one intra-op thread (no second OpenMP team); threads started later keep the default
    assert intra_op == {ENGINE_THREADS} and run_on_new_thread(torch.get_num_threads) == torch.get_num_threads()



def wait_for(condition, timeout=10.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_engine_for_is_rebuilt_when_the_weights_change(tok):
    model = GPT(GPTConfig(vocab_size=len(tok), max_length=32, n_layers=1, n_heads=2, d_model=16)).eval()
    first = engine_for(model, tok)
    assert engine_for(model, tok) is first
    text = generate(model, tok, "The", max_new_tokens=5, temperature=0)[0].text
    model.load_state_dict({k: v * 0.5 for k, v in model.state_dict().items()})
    second = engine_for(model, tok)
    assert second is not first and second.health()["alive"]
    first.thread.join(timeout=10)                               # idle: the old engine's thread ends by itself
    assert not first.thread.is_alive()
    with pytest.raises(EngineStopped): first.submit(Request(tok.encode("The")))
    assert isinstance(generate(model, tok, "The", max_new_tokens=5, temperature=0)[0].text, str) and text is not None


def test_closing_a_stream_early_cancels_its_request(tiny_model):
    model, tok = tiny_model
    kw = dict(max_new_tokens=100, temperature=0.8, seed=1)
    assert len(generate(model, tok, "The baker", **kw)[0].token_ids) > 5       # it would run on
    engine = engine_for(model, tok)
    before = engine.cancelled
    for piece in stream_generate(model, tok, "The baker", **kw): break         # the generator is closed here
    wait_for(lambda: engine.active == 0 and engine.queue_depth == 0)
    assert engine.cancelled == before + 1


def collect(requests):
    "Give each request an on_piece that keeps what it receives; returns {id: [pieces or errors]} and an all-done event."
    got, done = {r.id: [] for r in requests}, threading.Semaphore(0)
    for r in requests:
        def on_piece(p, r=r):
            got[r.id].append(p)
            if isinstance(p, Exception) or p.finish_reason: done.release()
        r.on_piece = on_piece
    return got, lambda: [done.acquire(timeout=30) for _ in requests]


def test_cancel_frees_a_queue_place_at_once_and_an_active_row_gets_nothing_more(tiny_model):
    model, tok = tiny_model
    sched = Scheduler(model, tok, max_batch_size=1, max_queue=1)
    a, b = Request(tok.encode("The baker"), on_piece=lambda p: None), Request(tok.encode("She"), on_piece=lambda p: None)
    sched.submit(a)
    with pytest.raises(QueueFull): sched.submit(b)
    sched.cancel(a)                                             # queued: it leaves the queue now
    assert (sched.queue_depth, sched.cancelled) == (0, 1)
    sched.submit(b)
    sched.cancel(b)
    long = Request(tok.encode("The baker"), max_new_tokens=200, temperature=0.8, seed=1)
    got, _ = collect([long])
    sched.start()
    sched.submit(long)
    wait_for(lambda: len(got[long.id]) >= 2)
    sched.cancel(long)
    n = len(got[long.id])
    wait_for(lambda: sched.active == 0)
    time.sleep(0.05)
    assert len(got[long.id]) == n and not got[long.id][-1].finish_reason    # nothing after cancel returned
    assert sched.cancelled == 3
    sched.stop()


def test_health_reports_a_stall_and_a_stopped_engine_refuses_work(tiny_model):
    model, tok = tiny_model
    sched = Scheduler(model, tok, max_batch_size=2)
    assert sched.health() == dict(alive=False, queued=0, active=0, steps=0, stalled_s=0.0)
    r = Request(tok.encode("The"), max_new_tokens=3)
    got, wait = collect([r])
    sched.submit(r)
    time.sleep(0.1)
    assert sched.health()["stalled_s"] >= 0.1 and sched.health()["queued"] == 1     # work, and no thread to do it
    sched.start(); wait()
    h = sched.health()
    assert h["alive"] and h["steps"] >= 1 and h["stalled_s"] == 0.0 and got[r.id][-1].finish_reason
    sched.stop()
    assert not sched.health()["alive"]
    with pytest.raises(EngineStopped, match="stopped"): sched.submit(Request(tok.encode("The")))


def test_a_dead_engine_thread_fails_every_request_with_engine_stopped(tiny_model, caplog):
    model, tok = tiny_model
    class Crash(BaseException): pass
    sched = Scheduler(model, tok, max_batch_size=1)
    def crash(): raise Crash("injected")
    sched._step = crash                                          # the loop thread dies at its first step
    requests = [Request(tok.encode(p), max_new_tokens=5) for p in ("The", "She")]   # one active, one queued
    got, wait = collect(requests)
    for r in requests: sched.submit(r)
    sched.start(); wait()
    for r in requests:
        (error,) = got[r.id]
        assert isinstance(error, EngineStopped) and "Crash: injected" in str(error) and not isinstance(error, ValueError)
    assert not sched.health()["alive"]
    with pytest.raises(EngineStopped, match="died"): sched.submit(Request(tok.encode("The")))


ROWS = [("The baker", dict(temperature=0)), ("She said", dict(temperature=0.9, top_k=30, seed=3)),
        ("Once upon a time", dict(temperature=1.1, top_p=0.9, seed=4)), ("In the morning", dict(temperature=0.7, seed=5))]
BAD = 2                                                          # the row that fails


@pytest.mark.parametrize("where", ["admit", "accept", "step", "nan"])
def test_a_fault_in_one_row_fails_that_row_alone(tiny_model, monkeypatch, where):
    model, tok = tiny_model
    sched = Scheduler(model, tok, max_batch_size=4)
    requests = [Request(tok.encode(p), max_new_tokens=15, **kw) for p, kw in ROWS]
    bad = requests[BAD]
    slot = lambda: next(i for i, (r, _, _) in enumerate(sched.rows) if r is bad)   # where the bad row is now
    injected = []
    if where == "admit":
        real_admit = sched._admit
        def admit(request):
            if request is bad: injected.append(1); raise RuntimeError("injected")
            real_admit(request)
        sched._admit = admit
    elif where == "accept":
        real_accept = Sequence.accept
        def accept(self, token, *args):
            if self.ids[:len(bad.prompt_ids)] == bad.prompt_ids and self.n_new == 3:
                injected.append(1); raise RuntimeError("injected")
            return real_accept(self, token, *args)
        monkeypatch.setattr(Sequence, "accept", accept)
    elif where == "step":                                        # inside the step, after layer 0 wrote its keys
        real_update = sched.cache.update
        def update(layer, k, v):
            if layer == 1 and any(r is bad for r, _, _ in sched.rows) and sched.steps >= 4 \
                    and sched.cache.row in (None, slot()):
                injected.append(sched.cache.row)                 # batched, then the bad row alone: both fail
                raise RuntimeError("injected")
            return real_update(layer, k, v)
        sched.cache.update = update
    else:
        real_step = sched.decoder.step
        def step(tokens, cache):
            logits = real_step(tokens, cache)
            if any(r is bad for r, _, _ in sched.rows) and sched.steps >= 4:
                if cache.row is None: logits[slot()] = float("nan"); injected.append(1)
                elif cache.row == slot(): logits[0] = float("nan"); injected.append(1)
            return logits
        sched.decoder = type("D", (), {"step": staticmethod(step), "version": sched.decoder.version})()
    got, wait = collect(requests)
    sched.start()
    for r in requests: sched.submit(r)
    wait(); sched.stop()
    assert injected if where != "step" else injected[:2] == [None, 2]   # the step: batched, then the row alone
    (error,) = [p for p in got[bad.id] if isinstance(p, Exception)]
    assert isinstance(error, EngineError) and not isinstance(error, ValueError) and error.__cause__ is not None
    assert got[bad.id][-1] is error                              # nothing after its error
    for (prompt, kw), r in zip(ROWS, requests):
        if r is bad: continue
        alone = generate(model, tok, prompt, max_new_tokens=15, **kw)[0]
        assert "".join(p.text for p in got[r.id]) == alone.text and got[r.id][-1].finish_reason == alone.finish_reason


def test_tiny_temperature_is_greedy_and_no_piece_carries_a_non_finite_number(tiny_model):
    model, tok = tiny_model
    greedy = generate(model, tok, "The baker", max_new_tokens=15, temperature=0)[0]
    assert generate(model, tok, "The baker", max_new_tokens=15, temperature=1e-30, seed=1)[0].token_ids == greedy.token_ids
    sched = Scheduler(model, tok, max_batch_size=2)
    real_step = sched.decoder.step
    def step(tokens, cache):                                     # three possible tokens: the rest at -inf
        logits = real_step(tokens, cache)
        logits[:, 3:] = float("-inf")
        return logits
    sched.decoder = type("D", (), {"step": staticmethod(step), "version": sched.decoder.version})()
    r = Request(tok.encode("The"), max_new_tokens=6, temperature=1.0, seed=0, top_logprobs=5, prompt_logprobs=True)
    got, wait = collect([r])
    sched.start(); sched.submit(r); wait(); sched.stop()
    pieces = got[r.id]
    assert pieces and all(isinstance(p, type(pieces[0])) for p in pieces)
    numbers = [p.logprob for p in pieces] + [v for p in pieces for v in p.top_logprobs.values()]
    assert all(math.isfinite(x) for x in numbers) and LOGPROB_FLOOR in numbers
    assert all(p.token_id < 3 for p in pieces[1:])               # after the first step, only the finite three


def test_submit_refuses_what_the_model_cannot_take(tiny_model):
    model, tok = tiny_model
    sched = Scheduler(model, tok)
    for ids, message in [([], "1 to"), ([1] * model.config.max_length, "1 to"), ([10**6], "token ids must be in")]:
        with pytest.raises(ValueError, match=message): sched.submit(Request(ids))
    with pytest.raises(ValueError, match="top_p"): sched.submit(Request([1], top_p=0))
    assert sched.queue_depth == 0
    assert issubclass(EngineStopped, EngineError) and issubclass(EngineError, RuntimeError)
    assert not issubclass(EngineError, ValueError)
