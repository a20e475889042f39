"Deployment: gunicorn with uvicorn workers serving `gptlite.api:app` from environment variables; the Dockerfile."
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from gptlite.model import load_checkpoint
from gptlite.engine import generate

from conftest import ROOT, free_port


@pytest.mark.slow
def test_gunicorn_workers_serve_the_checkpoint_from_the_environment(tiny_run):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTLITE_CHECKPOINT": str(tiny_run), "GPTLITE_API_KEY": "k" * 16,
           "GPTLITE_MAX_NEW_TOKENS": "50"}
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "gptlite.api:app", "-c", str(ROOT / "gunicorn.conf.py"),
                             "-w", "2", "-b", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer " + "k" * 16}
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            assert proc.poll() is None
            try:
                if httpx.get(url + "/health").status_code == 200: break
            except httpx.TransportError: pass
            time.sleep(0.2)
        model, tok = load_checkpoint(tiny_run)
        expected = generate(model, tok, "The baker", max_new_tokens=20, temperature=0)[0].text
        for _ in range(6):                                     # several requests: both workers answer the same
            for _ in range(300):                               # a worker still loading says 503: retry, as clients do
                r = httpx.post(url + "/generate", json={"prompt": "The baker", "max_length": 20, "temperature": 0},
                               headers=headers, timeout=60)
                if r.status_code != 503: break
                time.sleep(0.2)
            assert r.status_code == 200 and r.json()["generated_text"] == expected, r.text
        assert httpx.post(url + "/generate", json={"prompt": "x"}).status_code == 401            # the key from the env
        r = httpx.post(url + "/generate", json={"prompt": "x", "max_length": 60}, headers=headers)
        assert r.status_code == 400 and "at most 50" in r.json()["detail"]                     # GPTLITE_MAX_NEW_TOKENS
        # levels, before any scrape: the idle workers report none active or queued (each samples its engine twice a
        # second; a level set at each step would still show the last step's row, in the worker this scrape misses)
        time.sleep(1.0)
        for _ in range(4):
            text = httpx.get(url + "/metrics", headers=headers).text
            levels = {l.split()[0]: float(l.split()[1]) for l in text.splitlines()
                      if l.startswith(("gptlite_active_sequences ", "gptlite_queue_depth "))}
            assert levels == {"gptlite_active_sequences": 0.0, "gptlite_queue_depth": 0.0}, text[-3000:]
        # each scrape reaches one worker, and reports both workers' counts summed (prometheus multiprocess mode)
        for _ in range(6):
            text = httpx.get(url + "/metrics", headers=headers).text
            ok = [l for l in text.splitlines() if l.startswith('gptlite_requests_total{path="/generate",status="200"}')]
            assert ok and float(ok[0].split()[-1]) == 6, text[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert out.count("Booting worker") == 2 and "Traceback" not in out, out[-2000:]


def test_dockerfile_runs_exactly_the_readme_commands():
    docker = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    steps = [m.group(1).strip() for m in re.finditer(r"^RUN (.+)$", docker, re.M)]
    cmd = re.search(r'^CMD \[(.+)\]$', docker, re.M).group(1)
    command = " ".join(part.strip().strip('"') for part in cmd.split(","))
    assert steps and all(step in readme for step in steps), steps
    assert command in readme, command
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "saved_models", "_docs"} <= set(ignored)                 # models are mounted, not baked in
