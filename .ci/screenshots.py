#!/usr/bin/env python
"""Take the two screenshots the docs show, with the course model: the Streamlit app and the notebook playground.

    python .ci/screenshots.py                                  # both, from saved_models/course, into nbs/images/
    python .ci/screenshots.py --only app                       # just nbs/images/app.png
    python .ci/screenshots.py --checkpoint DIR --out-dir /tmp  # another checkpoint, somewhere else

It needs what `.ci/run` installs: the dev requirements (streamlit, jupyterlab, ipywidgets, playwright) and Debian's
`chromium`, which Playwright drives headless (Playwright downloads no browser). Everything runs on 127.0.0.1, and
every process the script starts is stopped before it exits, on success or failure.

- `app.png`: starts `streamlit run gptlite/app.py -- --checkpoint CKPT` on a free port, types the prompt "ROMEO:" and
  seed 3 into the page, presses Generate, waits for the token-probability view and the end of the run, and saves the
  window: 1300 pixels wide, made as tall as the page (1000 to 1700 pixels; Streamlit scrolls inside the page, so a
  "full page" screenshot would not show more).
- `playground.png`: writes a one-cell notebook into a temporary folder (load the checkpoint, show
  `Playground(model, tok, "ROMEO:\\n").ui` with top-k 10 so that the chart shows the cut-off), starts `jupyter lab` on
  a free port with a random token and a temporary settings folder, opens the notebook in Chromium, runs it from the
  Run menu, presses the playground's Generate button, waits for the streamed text to stop growing and the kernel to
  go idle, and saves the widget alone.

The prompts and seeds are fixed, so the text is the same on every run with the same checkpoint and library versions.
The script checks that the shown text is the model's (the app's text is compared with `gptlite.engine.generate`, the
playground's with `gptlite.sampling.sample`) and exits non-zero otherwise. When a step fails it prints the end of the
server's log and saves what the browser showed as `app-failed.png` or `playground-failed.png` in the temp folder.
"""
import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[1]
APP_PROMPT, APP_SEED = "ROMEO:", 3      # seeds picked once, by eye; the app shows a prompt ending in "\n" as a rule
PLAY_PROMPT, PLAY_SEED, PLAY_TOP_K = "ROMEO:\n", 0, 10
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    "A TCP port nothing listens on, on the loopback interface."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], env: dict, log: Path, cwd: Path = ROOT):
    "Run `cmd` in a process group of its own (its children, such as a Jupyter kernel, stop with it) for the block; on a failure print the end of its log."
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try: yield proc
    except BaseException:
        print(f"the end of {Path(cmd[2]).name}'s log:\n{log.read_text()[-4000:]}", file=sys.stderr)
        raise
    finally: stop(proc)


def stop(proc: subprocess.Popen):
    "SIGTERM to the process group we started (Jupyter shuts its kernels down), then SIGKILL to what is left."
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try: os.killpg(proc.pid, sig)
        except ProcessLookupError: return
        try: proc.wait(wait)
        except subprocess.TimeoutExpired: continue
        try: os.killpg(proc.pid, 0)                        # children still alive after the leader ended?
        except ProcessLookupError: return


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None: sys.exit(f"the server stopped (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urlopen(url, timeout=3) as r:
                if r.status == 200: return
        except (URLError, OSError): pass
        time.sleep(0.5)
    sys.exit(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def launch(p):
    chromium = shutil.which("chromium")
    if not chromium: sys.exit("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    return p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)


class failure_shot:
    "On an error inside the block, save what the browser shows (into the system's temp folder) and say where."
    def __init__(self, page, name: str): self.page, self.path = page, Path(tempfile.gettempdir()) / f"{name}-failed.png"
    def __enter__(self): return self
    def __exit__(self, kind, *_):
        if kind is not None:
            try: self.page.screenshot(path=str(self.path)); print(f"what the browser showed: {self.path}", file=sys.stderr)
            except Exception: pass


def env_for_children() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    env.pop("MPLBACKEND", None)                            # the kernel needs matplotlib's inline back-end
    return env


SCROLL_HEIGHT = """Math.max(document.documentElement.scrollHeight, ...[...document.querySelectorAll('*')]
    .filter(e => /auto|scroll/.test(getComputedStyle(e).overflowY)).map(e => e.scrollHeight))"""


def shoot_app(ckpt: str, out: Path, tmp: Path):
    from playwright.sync_api import sync_playwright
    from gptlite.engine import generate
    from gptlite.model import load_checkpoint

    tmp.mkdir(parents=True)
    port, log = free_port(), tmp / "streamlit.log"
    with serving([sys.executable, "-m", "streamlit", "run", "gptlite/app.py", "--server.headless", "true",
                  "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
                  "--", "--checkpoint", ckpt], env_for_children(), log) as proc:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            with failure_shot(page, "app"):
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{port}/")
                box = page.get_by_label("prompt", exact=True)
                box.wait_for(timeout=120_000)
                page.get_by_text("M parameters").wait_for(timeout=120_000)      # the model is loaded
                box.fill(APP_PROMPT)
                box.press("Control+Enter")                                     # a text area commits its value so
                seed = page.get_by_label("seed (empty = random)", exact=True)
                seed.fill(str(APP_SEED))
                seed.press("Enter")                                            # a text input commits on Enter
                page.wait_for_timeout(1500)
                page.locator('button[data-testid="stBaseButton-primary"]', has_text="Generate").click()
                page.get_by_text("How sure was the model?").wait_for(timeout=180_000)
                page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=60_000)   # run finished
                page.wait_for_timeout(1000)
                shown = page.get_by_text("tokens in").first.inner_text()
                streamed = page.locator('[data-testid="stMarkdownContainer"]').all_inner_texts()
                height = page.evaluate(SCROLL_HEIGHT)        # Streamlit scrolls its main area, not the document, so
                page.set_viewport_size({"width": 1300, "height": min(max(height, 1000), 1700)})   # grow the window
                page.wait_for_timeout(1000)
                page.screenshot(path=str(out))
            browser.close()
        if errors: sys.exit(f"the app page raised errors: {errors}")
        model, tok = load_checkpoint(ckpt)
        expected = generate(model, tok, APP_PROMPT, max_new_tokens=100, temperature=0.8, seed=APP_SEED)[0].text
        first_line = next(l for l in expected.splitlines() if l.strip())
        if not any(first_line.strip() in t for t in streamed):
            sys.exit(f"the app does not show the model's text; expected a line {first_line!r}, page: {streamed}")
        print(f"app: {shown}; page height {height} px -> {out}")


NOTEBOOK_CELL = """\
from gptlite.model import load_checkpoint
from gptlite.sampling import Playground

model, tok = load_checkpoint({ckpt!r})
playground = Playground(model, tok, {prompt!r})
playground.top_k.value, playground.seed.value = {top_k}, {seed}   # as if moved by hand: top-k 10 shows the cut-off
playground.ui"""


def write_notebook(path: Path, ckpt: str):
    cell = dict(cell_type="code", id="c0ffee00", metadata={}, outputs=[], execution_count=None,
                source=NOTEBOOK_CELL.format(ckpt=str(Path(ckpt).resolve()), prompt=PLAY_PROMPT, top_k=PLAY_TOP_K,
                                            seed=PLAY_SEED))
    nb = dict(nbformat=4, nbformat_minor=5, cells=[cell],
              metadata=dict(kernelspec=dict(name="python3", display_name="Python 3", language="python")))
    path.write_text(json.dumps(nb, indent=1) + "\n")


def kernel_idle(base: str, token: str, timeout: float = 180):
    "Wait until the server's one kernel has started and is idle (the page's own indicator says idle before that)."
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urlopen(f"{base}/api/sessions?token={token}", timeout=5) as r: sessions = json.load(r)
        if sessions and sessions[0]["kernel"]["execution_state"] == "idle": return
        time.sleep(0.5)
    raise TimeoutError(f"the kernel was not idle within {timeout} s")


def shoot_playground(ckpt: str, out: Path, tmp: Path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
    from gptlite.model import load_checkpoint
    from gptlite.sampling import sample

    root, config, runtime = tmp / "root", tmp / "config", tmp / "runtime"
    for d in (root, config / "labconfig", runtime): d.mkdir(parents=True)
    write_notebook(root / "playground.ipynb", ckpt)
    # a settings folder of our own: no news pop-up, and no workspace or settings of the user's come in or change
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    tracker = tmp / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"autoStartDefaultKernel": True}))      # else a "Select Kernel" dialog asks
    env = {**env_for_children(), "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(runtime)}
    port, token, log = free_port(), secrets.token_hex(16), tmp / "jupyter.log"
    with serving([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                  f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                  f"--LabApp.workspaces_dir={tmp / 'workspaces'}", f"--LabApp.user_settings_dir={tmp / 'settings'}"]
                 + (["--allow-root"] if os.geteuid() == 0 else []), env, log, cwd=root) as proc:   # CI's container is root
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/status?token={token}", proc, log)
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1300, "height": 1300})
            with failure_shot(page, "playground"):
                page.goto(f"{base}/lab/tree/playground.ipynb?token={token}")
                kernel_idle(base, token)                                   # started, and its websocket up
                page.wait_for_timeout(2000)
                ran = page.locator(".jp-InputPrompt", has_text=re.compile(r"\[(\*|\d+)\]"))
                for attempt in range(3):                                   # a click too early can be lost
                    page.locator(".lm-MenuBar-item", has_text="Run").first.click()
                    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
                    try: ran.first.wait_for(timeout=20_000); break
                    except PlaywrightTimeout:
                        if attempt == 2: raise
                widget = page.locator(".jp-OutputArea-output .widget-vbox").first
                widget.wait_for(timeout=180_000)
                widget.locator(".widget-output img").wait_for(timeout=120_000)      # the next-token explorer
                kernel_idle(base, token)
                widget.locator("button", has_text="Generate").click()
                text = widget.locator("pre").first
                text.wait_for(timeout=120_000)
                last, still = "", 0
                while still < 6:                                              # 3 s without a new piece: done
                    page.wait_for_timeout(500)
                    now = text.inner_text()
                    still, last = (still + 1 if now == last else 0), now
                kernel_idle(base, token)
                page.mouse.move(0, 0)                                          # no hover highlight on the button
                page.wait_for_timeout(500)
                widget.screenshot(path=str(out))
            browser.close()
        model, tok = load_checkpoint(ckpt)
        expected = "".join(s.text for s in sample(model, tok, PLAY_PROMPT, max_new_tokens=60, temperature=0.8,
                                                   top_k=PLAY_TOP_K, top_p=1.0, seed=PLAY_SEED))
        if " ".join(last.split()) != " ".join((PLAY_PROMPT + expected).split()):
            sys.exit(f"the playground does not show the model's text:\n{last!r}\nexpected\n{PLAY_PROMPT + expected!r}")
        print(f"playground: {len(last)} characters of text -> {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default="saved_models/course", help="checkpoint directory (relative to the repo)")
    ap.add_argument("--out-dir", default=str(ROOT / "nbs" / "images"))
    ap.add_argument("--only", choices=["app", "playground"])
    args = ap.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))                                          # this checkout's gptlite
    if not (Path(args.checkpoint) / "config.json").exists(): sys.exit(f"no checkpoint at {args.checkpoint}")
    out = Path(args.out_dir); out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gptlite-screenshots-") as tmp:
        if args.only in (None, "app"): shoot_app(args.checkpoint, out / "app.png", Path(tmp) / "app")
        if args.only in (None, "playground"): shoot_playground(args.checkpoint, out / "playground.png", Path(tmp) / "play")


if __name__ == "__main__":
    main()
