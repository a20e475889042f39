#!/usr/bin/env python
"""The fresh-user stage of CI: the README's own commands, run as a new user would run them.

    python .ci/fresh_user.py            # --keep: leave the copy and its virtual environment for a look afterwards

A copy of the checkout as a fresh clone has it (tracked and untracked, unignored files: no `saved_models/`, no token
caches), a new virtual environment outside the development one, and in it, read from README.md so that the README and
this check cannot drift:

1. the quick start's first command (`<!-- fresh-user: install-and-train -->`), with only a short `--time-budget`
   added: it must install, train and save a checkpoint;
2. every `gptlite.*` module imports;
3. the first `gptlite-generate` command (`<!-- fresh-user: generate -->`) prints text;
4. the server command (`<!-- fresh-user: serve -->`) starts and answers `/health`, and the README's `curl` to
   `/generate` gets generated text (both on a free port in place of 8000, which CI may have in use);
5. `streamlit run gptlite/app.py` (`<!-- fresh-user: app -->`) starts and answers its health endpoint and its page.

Only the standard library is used: this runs before anything of ours is installed.
"""
import argparse, json, os, re, shlex, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_BUDGET = 20   # seconds: enough to train and save a checkpoint, short enough for every CI run


def readme_commands(marker: str, readme: str) -> list[str]:
    "The command lines (comments stripped) of the first ```sh block after `<!-- fresh-user: marker -->` in the README."
    m = re.search(rf"<!-- fresh-user: {re.escape(marker)} -->\s*```sh\n(.*?)```", readme, re.S)
    if not m: raise SystemExit(f"README.md has no ```sh block after <!-- fresh-user: {marker} -->")
    lines = [re.sub(r"\s+# .*$", "", line).strip() for line in m.group(1).splitlines()]   # a trailing "  # note"
    return [line for line in lines if line and not line.startswith("#")]


def fresh_copy(dest: Path) -> Path:
    "The files a fresh clone of this checkout would hold (tracked, plus untracked files git does not ignore)."
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 60) -> tuple[int, str]:
    "(status, body) of GET url."
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r: return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()


class Step:
    "One step of the stage: prints what it runs, fails the stage with the command's output when it goes wrong."
    def __init__(self, env: dict, cwd: Path): self.env, self.cwd, self.failed = env, cwd, []

    def run(self, cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
        print(f"$ {cmd}", flush=True)
        t = time.time()
        r = subprocess.run(["bash", "-c", cmd], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        print(f"  exit {r.returncode} in {time.time() - t:.0f} s", flush=True)
        return r

    def check(self, ok: bool, what: str, output: str = ""):
        print(f"  {'ok' if ok else 'FAILED'}: {what}", flush=True)
        if not ok:
            self.failed.append(what)
            lines = [l for l in output.strip().splitlines() if "is ignored: it is neither" not in l]   # pip's noise here
            if lines: print("  " + "\n  ".join(lines[-40:]), flush=True)

    def start(self, cmd: str) -> subprocess.Popen:
        print(f"$ {cmd} &", flush=True)
        return subprocess.Popen(["bash", "-c", f"exec {cmd}"], cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stop(proc: subprocess.Popen) -> str:
    "Stop a background command and everything it started; its output."
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(15)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL)
    return proc.stdout.read() if proc.stdout else ""


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> int:
    "The status of GET url once it answers 200 (or the last status seen), giving up when the process exits."
    deadline, status = time.time() + timeout, 0
    while time.time() < deadline and proc.poll() is None:
        try: status = http_get(url, timeout=5)[0]
        except OSError: status = 0
        if status == 200: break
        time.sleep(0.5)
    return status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true", help="keep the copy and its virtual environment")
    args = ap.parse_args()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install_train = readme_commands("install-and-train", readme)[0]
    generate = readme_commands("generate", readme)[0]
    serve, request = readme_commands("serve", readme)[:2]
    app = readme_commands("app", readme)[0]

    work = Path(tempfile.mkdtemp(prefix="gptlite-fresh-user-"))
    try:
        repo = fresh_copy(work / "gptlite")
        venv.create(work / "venv", with_pip=True)
        bin_dir = str(work / "venv" / "bin")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(VIRTUAL_ENV=str(work / "venv"), PATH=bin_dir + os.pathsep + env.get("PATH", ""),
                   PIP_DISABLE_PIP_VERSION_CHECK="1", MPLBACKEND="Agg")
        step = Step(env, repo)
        print(f"== a fresh copy in {repo}, a new virtual environment in {work / 'venv'}", flush=True)

        # 1. Install and train, exactly as the README says, with a short budget added.
        r = step.run(f"{install_train} --time-budget {TRAIN_BUDGET}")
        ckpts = sorted(p.parent for p in (repo / "saved_models").rglob("model.safetensors"))
        step.check(r.returncode == 0 and bool(ckpts), f"the README's first command installs, trains and saves a "
                   f"checkpoint ({', '.join(str(p.relative_to(repo)) for p in ckpts) or 'none'})", r.stdout + r.stderr)
        if step.failed: raise SystemExit(1)

        # 2. Every module of the package imports in the user's environment.
        modules = sorted(p.stem for p in (repo / "gptlite").glob("*.py") if not p.stem.startswith("_"))
        r = step.run("python -c " + shlex.quote("import importlib\nfor m in %r: importlib.import_module('gptlite.' + m)"
                                                % modules))
        step.check(r.returncode == 0, f"every module imports ({', '.join(modules)})", r.stdout + r.stderr)

        # 3. Generate.
        r = step.run(generate, timeout=300)
        prompt = shlex.split(generate)[shlex.split(generate).index("--prompt") + 1]
        step.check(r.returncode == 0 and len(r.stdout.strip()) > len(prompt), "gptlite-generate prints text",
                   r.stdout + r.stderr)

        # 4. Serve, and the README's request.
        port = str(free_port())
        server = step.start(serve.replace("8000", port))
        try:
            status = wait_for(f"http://127.0.0.1:{port}/health", server)
            step.check(status == 200, f"the server answers /health (status {status})")
            if status == 200:
                r = step.run(request.replace("8000", port), timeout=120)
                try: text = json.loads(r.stdout)["generated_text"]
                except (ValueError, KeyError, TypeError): text = None
                step.check(r.returncode == 0 and bool(text), "the README's POST /generate returns generated text",
                           r.stdout + r.stderr)
        finally:
            out = stop(server)
        if step.failed and out: print("  server output:\n  " + "\n  ".join(out.strip().splitlines()[-30:]))

        # 5. The app: Streamlit's own settings from the environment keep the command exactly the README's.
        port = str(free_port())
        step.env = {**env, "STREAMLIT_SERVER_HEADLESS": "true", "STREAMLIT_SERVER_PORT": port,
                    "STREAMLIT_SERVER_ADDRESS": "127.0.0.1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
        streamlit = step.start(app)
        try:
            status = wait_for(f"http://127.0.0.1:{port}/_stcore/health", streamlit)
            step.check(status == 200, f"the app answers /_stcore/health (status {status})")
            status, page = http_get(f"http://127.0.0.1:{port}/") if status == 200 else (0, "")
            step.check(status == 200 and "<html" in page.lower(), "the app serves its page")
        finally:
            out = stop(streamlit)
        if step.failed and out: print("  app output:\n  " + "\n  ".join(out.strip().splitlines()[-30:]))

        if step.failed:
            raise SystemExit(f"fresh-user stage failed: {'; '.join(step.failed)}")
        print("== fresh-user stage passed", flush=True)
    finally:
        if args.keep: print(f"kept {work}")
        else: shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__": main()
