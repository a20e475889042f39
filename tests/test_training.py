"Training tests: exact resume (in-process and after kill -9), time budget, bad input, NaN loss, DDP on 2 CPU ranks."
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gptlite.model import load_checkpoint
from gptlite.training import main, make_config, train

from conftest import SAMPLE, run_main

TINY = dict(n_layers=1, d_model=32, n_heads=2, max_length=32, batch_size=4, vocab_size=300, eval_iters=2, dtype="fp32",
            sample_tokens=0, warmup_iters=5, log_interval=5, dropout=0.1)
TINY_ARGS = [a for k, v in TINY.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def cli(*args, env_extra=None, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "gptlite.training", *args], capture_output=True, text=True, env=env, **kw)


def weights(path):
    return load_checkpoint(path, with_tokenizer=False)[0].state_dict()


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metrics(run):
    return [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_exact_resume_in_process(tmp_path, optimizer):
    cfg = make_config(**TINY, max_iters=40, eval_interval=10, optimizer=optimizer)
    train(cfg, SAMPLE, tmp_path / "a", progress=False)
    train(cfg, SAMPLE, tmp_path / "b", progress=False, stop_after=27)    # dies after step 27; last/ is at step 20
    train(cfg, SAMPLE, tmp_path / "b", progress=False, resume=True)
    assert same_weights(tmp_path / "a" / "last", tmp_path / "b" / "last")
    assert same_weights(tmp_path / "a", tmp_path / "b")                    # the best checkpoint too
    ma, mb = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("elapsed_s", "tokens_per_s")} for r in rows]
    assert strip(ma) == strip(mb)                                          # same losses, no duplicated steps


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path):
    args = ["--data", str(SAMPLE), *TINY_ARGS, "--max-iters", "400", "--eval-interval", "50", "--quiet"]
    assert cli(*args, "--out", str(tmp_path / "a")).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "gptlite.training", *args, "--out", str(tmp_path / "b")],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "b" / "last" / "training_state.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (state.is_file() and torch.load(state, weights_only=True)["step"] >= 100):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 100 <= killed_at < 400, "the run should have been killed part-way"
    r = cli(*args, "--out", str(tmp_path / "b"), "--resume")
    assert r.returncode == 0, r.stderr
    assert same_weights(tmp_path / "a" / "last", tmp_path / "b" / "last")
    assert metrics(tmp_path / "a")[-1]["val_loss"] == metrics(tmp_path / "b")[-1]["val_loss"]
    assert r.stdout.strip().splitlines()[-1].startswith("final: val loss")


def test_time_budget_stops_the_run_and_is_recorded(tmp_path):
    # The one real `gptlite-train` process of the fast tests: a budget of 2 s stops a run of a million steps.
    r = cli("--data", str(SAMPLE), *TINY_ARGS, "--max-iters", "1000000", "--time-budget", "2", "--eval-interval", "100",
            "--out", str(tmp_path / "run"), "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped_by"] == "time_budget" and 0 < summary["step"] < 1000000
    assert metrics(tmp_path / "run")[-1]["step"] == summary["step"]            # the last step is recorded
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("final: val loss") and "bits/byte" in line
    model, _ = load_checkpoint(tmp_path / "run")                                 # and the best model is saved


@pytest.mark.parametrize("args,message", [
    (["--data", "no/such/place"], "does not exist"),
    (["--d-model", "30", "--n-heads", "4"], "divisible by n_heads"),
    (["--resume"], "no checkpoint to resume"),
    (["--preset", "huge"], "invalid choice"),
    (["--dtype", "fp8"], "dtype must be"),
    (["--lr", "abc"], "invalid float value"),
])
def test_bad_input_exit_2(tmp_path, args, message, capsys):
    base = ["--data", str(SAMPLE), "--out", str(tmp_path / "run"), "--quiet", "--max-iters", "3"]
    code, _, err = run_main(main, [*base, *args], capsys)
    assert code == 2
    assert message in err
    assert err.strip().count("\n") == 0
    assert not (tmp_path / "run" / "last").exists()


def test_resume_with_different_config_and_existing_run(tmp_path, capsys):
    base = ["--data", str(SAMPLE), *TINY_ARGS, "--out", str(tmp_path / "run"), "--quiet", "--eval-interval", "5"]
    assert run_main(main, [*base, "--max-iters", "10"], capsys)[0] == 0
    code, _, err = run_main(main, [*base, "--max-iters", "20"], capsys)
    assert code == 2 and "already holds a run" in err
    code, _, err = run_main(main, [*base, "--max-iters", "20", "--resume", "--d-model", "64"], capsys)
    assert code == 2 and "different config" in err and "d_model=32" in err
    code, _, err = run_main(main, [*base, "--max-iters", "20", "--resume"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["step"] == 20


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, capsys):
    base = ["--data", str(SAMPLE), *TINY_ARGS, "--out", str(tmp_path / "run"), "--quiet", "--eval-interval", "1",
            "--max-iters", "200", "--grad-clip", "0", "--warmup-iters", "1"]
    code, _, err = run_main(main, [*base, "--lr", "1e30"], capsys)
    assert code == 2
    assert "the loss became" in err and "at step" in err
    state = torch.load(tmp_path / "run" / "last" / "training_state.pt", weights_only=True)
    model, _ = load_checkpoint(tmp_path / "run" / "last")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    step = int(err.split("at step ")[1].split(":")[0])
    assert state["step"] < step


def test_run_directory_is_a_checkpoint(tmp_path):
    cfg = make_config(**TINY, max_iters=20, eval_interval=10)
    summary = train(cfg, SAMPLE, tmp_path / "run", progress=False)
    model, tok = load_checkpoint(tmp_path / "run")
    assert model.config.d_model == 32 and len(tok) == model.config.vocab_size
    rows = metrics(tmp_path / "run")
    assert all({"step", "tokens", "elapsed_s", "lr", "train_loss"} <= set(r) for r in rows)
    assert sum("val_bpb" in r for r in rows) == 2
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert math.isclose(summary["best_val_loss"], min(r["val_loss"] for r in rows if "val_loss" in r))
    assert not [p for p in (tmp_path / "run").iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_ddp_two_cpu_ranks_then_resume_on_one(tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(SAMPLE), *TINY_ARGS, "--out", str(run), "--quiet", "--eval-interval", "10"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "gptlite.training", *args, "--max-iters", "20"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = metrics(run)
    assert rows[-1]["step"] == 20
    assert rows[-1]["tokens"] == 20 * 4 * 32 * 2                            # two ranks, each its own batches
    assert r.stdout.count("final: val loss") == 1                           # only rank 0 reports and writes
    # a 2-rank step is not the same as a 1-rank step: the ranks really saw different batches
    single = tmp_path / "single"
    assert cli(*[a if a != str(run) else str(single) for a in args], "--max-iters", "20").returncode == 0
    assert not same_weights(run / "last", single / "last")
    # resume under a different world size
    r = cli(*args, "--max-iters", "30", "--resume")
    assert r.returncode == 0, r.stderr
    assert metrics(run)[-1]["step"] == 30


# --- a run loses nothing ---------------------------------------------------------------------------------------------
import errno

from gptlite.training import RunLock, read_metrics


def test_read_metrics_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train_loss": 2.0}\n{"step": 2, "val_loss": 1.5}\n{"step": 3, "tra')  # a crash mid-line
    assert [r["step"] for r in read_metrics(path)] == [1, 2]
    assert [r["step"] for r in read_metrics(path, max_step=1)] == [1]
    assert read_metrics(tmp_path / "none.jsonl") == []


def test_a_second_run_on_the_same_out_is_a_one_line_error(tmp_path, capsys):
    with RunLock(tmp_path / "run"):                                   # another run holds the folder
        code, _, err = run_main(main, ["--data", str(SAMPLE), "--out", str(tmp_path / "run"), *TINY_ARGS,
                                       "--max-iters", "3", "--quiet"], capsys)
    assert code == 2 and "is in use by another training run" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "run" / "last").exists()
    assert run_main(main, ["--data", str(SAMPLE), "--out", str(tmp_path / "run"), *TINY_ARGS, "--max-iters", "3",
                           "--eval-interval", "3", "--quiet"], capsys)[0] == 0   # released: the folder is free again


def test_a_full_disk_is_a_one_line_error_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    args = ["--data", str(SAMPLE), "--out", str(tmp_path / "run"), *TINY_ARGS, "--eval-interval", "5", "--quiet"]
    assert run_main(main, [*args, "--max-iters", "5"], capsys)[0] == 0
    before = weights(tmp_path / "run" / "last")
    import gptlite.model
    def full(*a, **kw): raise OSError(errno.ENOSPC, "No space left on device", str(a[1]) if len(a) > 1 else None)
    monkeypatch.setattr(gptlite.model, "save_file", full)
    code, _, err = run_main(main, [*args, "--max-iters", "10", "--resume"], capsys)
    assert code == 2 and "the disk is full" in err and "--resume" in err and err.strip().count("\n") == 0, err
    after = weights(tmp_path / "run" / "last")                        # the last complete checkpoint is intact
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.load(tmp_path / "run" / "last" / "training_state.pt", weights_only=True)["step"] == 5
    assert not [p.name for p in (tmp_path / "run").iterdir() if ".tmp" in p.name or ".old" in p.name]


def test_progress_counts_the_budget_and_one_start_line_names_the_run(tmp_path, capsys, monkeypatch):
    cfg = make_config(**TINY, max_iters=1_000_000, time_budget=1, eval_interval=10_000)
    train(cfg, SAMPLE, tmp_path / "quiet")
    assert "training:" not in capsys.readouterr().err      # not a terminal (a notebook, a log file): no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    train(cfg, SAMPLE, tmp_path / "run")
    out, err = capsys.readouterr()
    start = [l for l in out.splitlines() if l.startswith("training ")]
    assert len(start) == 1 and "M parameters" in start[0] and "tokens" in start[0] and "a budget of 1 s" in start[0]
    assert "100%" in err and "/1000000" not in err                    # the bar counts the budget, not 10^6 steps


def test_help_shows_the_defaults_that_apply(capsys):
    code, out, _ = run_main(main, ["--help"], capsys)
    defaults = make_config()
    assert code == 0 and f"(default: {defaults.optimizer!r})" in out and f"(default: {defaults.time_budget!r})" in out
    assert out.count("(default: chosen from the data and the budget)") == 9          # AUTO_FIELDS


@pytest.mark.slow
def test_a_kill_at_every_write_point_then_restart_equals_a_run_never_killed(tmp_path):
    # tests/crash_points.py kills a run (os._exit: no cleanup) just before each os.replace / os.rename / os.fsync of
    # its saves, in turn, restarts it, and compares the files with a run never killed.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SAMPLE.read_text(encoding="utf-8")[:40_000], encoding="utf-8")
    r = subprocess.run([sys.executable, str(Path(__file__).parent / "crash_points.py"), str(corpus), str(tmp_path)],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "TOKENIZERS_PARALLELISM": "false"})
    assert r.returncode == 0, r.stderr[-3000:]
    points = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(points) == points[0]["of"] >= 20                       # every write point of two saves, and more
    assert all(p["killed"] == 9 and p["restarted"] == 0 for p in points), points
    assert [p["point"] for p in points if not p["same"]] == []        # each restart ends exactly like the unkilled run
    assert [p for p in points if p["leftovers"]] == []                # and leaves no temporary files behind
    assert any(p["resumable"] for p in points) and any(not p["resumable"] for p in points)


def test_auto_precision_is_measured_recorded_and_kept_on_resume(tmp_path, monkeypatch):
    import gptlite.training
    from gptlite.training import pick_precision
    assert pick_precision({"fp32": 1.0, "bf16": 0.8}) == "bf16" and pick_precision({"fp32": 1.0, "bf16": 0.95}) == "fp32"
    cfg = make_config(**{**TINY, "dtype": "auto"}, max_iters=10, eval_interval=5)
    summary = train(cfg, SAMPLE, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last" / "training_state.pt", weights_only=True)
    assert summary["precision"] in ("fp32", "bf16") and state["precision"] == summary["precision"]
    def no_second_measurement(*a, **kw): raise AssertionError("a resumed run must keep its first choice")
    monkeypatch.setattr(gptlite.training, "step_seconds", no_second_measurement)
    again = train(dataclasses.replace(cfg, max_iters=15), SAMPLE, tmp_path / "run", progress=False, resume=True)
    assert again["precision"] == summary["precision"]


def test_no_step_is_evaluated_twice(tmp_path):
    # Evaluating every step, a budget always ends on an evaluation step: the final evaluation reuses it.
    cfg = make_config(**TINY, max_iters=1_000_000, time_budget=1, eval_interval=1)
    summary = train(cfg, SAMPLE, tmp_path / "run", progress=False)
    evaluated = [r["step"] for r in metrics(tmp_path / "run") if "val_loss" in r]
    assert len(evaluated) == len(set(evaluated)) and evaluated[-1] == summary["step"]


# --- the pieces of a run, one by one --------------------------------------------------------------------------------
from gptlite.training import evaluate_and_checkpoint, restore, setup_run, train_step

PIECES = dict(vocab_size=300, max_length=32, n_layers=1, n_heads=2, d_model=32, batch_size=8, dropout=0.0,
              eval_iters=2, sample_tokens=0, max_iters=20, warmup_iters=2, dtype="fp32")


def test_train_step_evaluate_and_restore_one_by_one(tmp_path):
    cfg = make_config("cpu", **PIECES)
    run = setup_run(cfg, SAMPLE, tmp_path / "run", progress=False)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    losses = [train_step(run) for _ in range(3)]
    assert run.state.step == 3 and all(math.isfinite(l) for l in losses)
    assert any(not torch.equal(before[k], v) for k, v in run.model.state_dict().items())   # the weights moved
    row = evaluate_and_checkpoint(run)
    assert row["step"] == 3 and row["val_loss"] == run.state.best_val and run.state.last_eval == row
    assert read_metrics(tmp_path / "run" / "metrics.jsonl") == [row]
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "last" / "training_state.pt").is_file()
    again = setup_run(cfg, SAMPLE, tmp_path / "run", progress=False)
    restore(again)
    assert again.state.step == 3 and again.state.best_val == run.state.best_val and again.state.rows == [row]
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in run.model.state_dict().items())


def test_grad_accum_equals_a_bigger_batch(tmp_path):
    # Two micro-batches of 4 make the same update as one batch of 8 (same windows: the batch generator's stream is
    # the same whether it draws 8 starts at once or 4 twice).
    runs = []
    for batch, accum in ((8, 1), (4, 2)):
        run = setup_run(make_config("cpu", **{**PIECES, "batch_size": batch, "grad_accum": accum, "optimizer": "adamw"}),
                        SAMPLE, tmp_path / f"run{accum}", progress=False)
        runs.append((train_step(run), run.model.state_dict()))
    (loss_a, a), (loss_b, b) = runs
    assert abs(loss_a - loss_b) < 1e-5
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


# --- the default run: sized to the data and the budget --------------------------------------------------------------
import gptlite.training as training


def fake_speed(monkeypatch, flops: float = 5e10):
    "A machine that trains at `flops` (6 x parameters x tokens per step) in fp32, and at half that in bf16."
    calls = []
    def measure(cfg, vocab_size, device=None, precisions=("fp32",), reps=3):
        calls.extend((cfg.d_model, p) for p in precisions)
        params = 12 * cfg.n_layers * cfg.d_model ** 2 + vocab_size * cfg.d_model
        secs = 6 * params * cfg.batch_size * cfg.max_length / flops
        return {p: secs * (1 if p == "fp32" else 2) for p in precisions}, params
    monkeypatch.setattr(training, "measure_train_step", measure)
    return calls


def test_a_budget_shorter_than_one_step_plans_one_step(monkeypatch):
    fake_speed(monkeypatch)                               # a slow or busy machine: the budget ends within a step
    tiny, cands = training.plan_size(make_config(time_budget=0.01), 2048, train_tokens=300_000)
    assert tiny.d_model == 64 and cands[0]["steps"] == 1  # one step, not a division by zero


def test_plan_picks_the_size_closest_to_the_tokens_per_parameter_rule(monkeypatch):
    calls = fake_speed(monkeypatch)                       # width 128: about 0.2 s a step
    cfg = make_config(time_budget=300)
    planned, cands = training.plan_size(cfg, 2048, train_tokens=300_000)
    target = {k["width"]: training.tokens_per_param_target(k["params"], k["tokens"]) for k in cands}
    ratio = {k["width"]: k["tokens"] / k["params"] for k in cands}
    assert planned.d_model == min(ratio, key=lambda w: abs(math.log(ratio[w] / target[w])))
    w_last, w_before = cands[-1]["width"], cands[-2]["width"]
    assert ratio[w_last] < target[w_last] and ratio[w_before] >= target[w_before]              # measured until below
    # a budget too short for the power law: the smallest size
    short, short_cands = training.plan_size(make_config(time_budget=5), 2048, train_tokens=300_000)
    assert short.d_model == 64 and all(k["steps"] < training.MIN_STEPS for k in short_cands[1:])
    # little text: no more than MAX_PARAMS_PER_TOKEN parameters per token, however long the budget
    small, small_cands = training.plan_size(make_config(time_budget=3000), 2048, train_tokens=50_000)
    assert small_cands[-1]["params"] > training.MAX_PARAMS_PER_TOKEN * 50_000 >= small.n_layers * 12 * small.d_model ** 2
    assert len(cands) < len(training.MODEL_FAMILY) and len(calls) == 2 * (len(cands) + len(small_cands) + len(short_cands))   # fp32, bf16
    pick = cands[[k["width"] for k in cands].index(planned.d_model)]
    assert pick["precision"] == "fp32" and planned.dropout == training.dropout_for(pick["epochs"])
    assert planned.n_layers == training.MODEL_FAMILY[planned.d_model][0] and planned.n_heads == planned.d_model // 32
    # a bigger budget: a bigger model
    bigger, _ = training.plan_size(make_config(time_budget=3000), 2048, train_tokens=300_000)
    assert bigger.d_model > planned.d_model
    # what the user gives is kept: a width fixes the size, a dropout is not replaced
    fixed, cands = training.plan_size(make_config(time_budget=300, d_model=256, dropout=0.3), 2048, 300_000)
    assert fixed.d_model == 256 and fixed.dropout == 0.3 and [k["width"] for k in cands] == [256]
    # more text, same budget: fewer passes over it, less dropout
    many, _ = training.plan_size(cfg, 2048, train_tokens=20_000)
    few, _ = training.plan_size(cfg, 2048, train_tokens=10**9)
    assert few.dropout == 0.0 < many.dropout


def test_default_run_prints_saves_and_keeps_its_choice_on_resume(tmp_path, monkeypatch, capsys):
    fake_speed(monkeypatch, flops=1e12)
    out = tmp_path / "run"
    code, text, err = run_main(main, ["--data", str(SAMPLE), "--out", str(out), "--max-iters", "40", "--time-budget", "0",
                                      "--sample-tokens", "0"], capsys)
    assert code == 0, err
    assert "sized to the data and the budget: vocabulary 512 for 0.16 MB" in text
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["vocab_size"] == 512 and saved["d_model"] in training.MODEL_FAMILY and "d_model" in saved["auto"]
    monkeypatch.setattr(training, "plan_size", lambda *a, **k: pytest.fail("a resume must not choose again"))
    code, text, err = run_main(main, ["--data", str(SAMPLE), "--out", str(out), "--max-iters", "60", "--time-budget", "0",
                                      "--sample-tokens", "0", "--resume"], capsys)
    assert code == 0 and "resuming from step 40" in text, err
    assert json.loads((out / "train_config.json").read_text())["d_model"] == saved["d_model"]


def test_patience_stops_a_run_that_only_memorises(tmp_path, monkeypatch):
    losses = iter([3.0, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1])     # better, then worse and worse
    monkeypatch.setattr(training, "estimate_loss", lambda model, data, cfg, split, ctx, device:
                        next(losses) if split == "val" else 1.0)
    cfg = make_config("cpu", **{**PIECES, "max_iters": 100, "eval_interval": 5, "patience": 3})
    summary = train(cfg, SAMPLE, tmp_path / "run", progress=False)
    assert summary["stopped_by"] == "patience" and summary["step"] == 25 and summary["best_step"] == 10


def test_token_probabilities_add_up_to_the_models_loss(tiny_model):
    from gptlite.training import probability_html, text_scores, token_probabilities
    model, tok = tiny_model
    text = SAMPLE.read_text(encoding="utf-8")[:300]
    pieces, probs = token_probabilities(model, tok, text)
    ids = torch.tensor([tok.encode(text)])
    assert "".join(pieces) == text and probs.shape == (ids.shape[1] - 1,)
    model.eval()
    loss = model(ids[:, :-1], ids[:, 1:])[1].item()
    scores = text_scores(pieces, probs)
    assert math.isclose(scores["loss"], loss, rel_tol=1e-4) and math.isclose(scores["ppl"], math.exp(loss), rel_tol=1e-4)
    bpb = -probs.double().log().sum().item() / math.log(2) / len(text[len(pieces[0]):].encode())
    assert math.isclose(scores["bpb"], bpb, rel_tol=1e-9)
    page = probability_html([("<mine>", pieces, probs)], len(tok))
    assert page.count('title="p = ') == len(pieces) - 1 and "&lt;mine&gt;" in page   # one span per prediction, escaped
    with pytest.raises(ValueError, match="text must be 2 to"):
        token_probabilities(model, tok, "a")                                            # one token: nothing to predict


def test_orthogonalize_in_bf16_is_close_to_fp32():
    from gptlite.training import orthogonalize
    g = torch.randn(64, 192, generator=torch.Generator().manual_seed(0))
    a, b = orthogonalize(g), orthogonalize(g, dtype=torch.bfloat16)
    assert b.dtype == torch.float32                       # returned in the gradient's dtype
    assert (a - b).abs().max() < 0.05


def test_recover_checkpoint_after_a_crash_between_the_renames(tok, tmp_path):
    from gptlite.model import GPT, GPTConfig, save_checkpoint
    from gptlite.training import recover_checkpoint
    model = GPT(GPTConfig(vocab_size=len(tok), max_length=16, n_layers=1, n_heads=2, d_model=16))
    old = save_checkpoint(tmp_path / "ckpt", model, tok)
    new = save_checkpoint(tmp_path / "new", model, tok)
    os.rename(old, tmp_path / ".ckpt.old-1"); os.rename(new, tmp_path / ".ckpt.tmp-2")      # the crash
    assert "recovered" in recover_checkpoint(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    load_checkpoint(tmp_path / "ckpt")
    (tmp_path / ".ckpt.tmp-3").mkdir()                                 # a first save cut short: only removed
    assert recover_checkpoint(tmp_path / "ckpt") is None and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def _clock_worker(rank, port, out):
    import time
    from types import SimpleNamespace
    import torch
    from gptlite.training import RunState, sync_clock
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    state = RunState(started=time.time() - 100 * rank)             # rank 1's own clock reads 100 s more
    sync_clock(SimpleNamespace(world=2, state=state, device=torch.device("cpu")))
    out[rank] = state.elapsed()
    torch.distributed.destroy_process_group()


def test_processes_share_process_0s_clock():
    "With a time budget the learning rate follows the clock: every process must read the same one."
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_clock_worker, args=(port, out), nprocs=2)
        assert out[0] == out[1] and out[0] < 50                     # rank 0's clock, not rank 1's
