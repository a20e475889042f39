"Training tests: exact resume (in-process and after kill -9), time budget, bad input, NaN loss, DDP on 2 CPU ranks."
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

TINY = dict(n_layers=1, d_model=32, n_heads=2, max_length=32, batch_size=4, vocab_size=300, eval_iters=2,
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
