"The Streamlit app: every feature through AppTest, the API back-end against a real server, and a real browser."
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from gptlite.app import PRESETS, export_csv, export_json, export_txt, list_runs, load_metrics, prob_color, token_html, TokenInfo
from gptlite.model import load_checkpoint
from gptlite.engine import generate

from conftest import ROOT, free_port

APP = str(ROOT / "gptlite" / "app.py")
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def runs(tiny_run):
    "The folder of the session's tiny run, `runs/tiny` (its only run)."
    return tiny_run.parent


def app(monkeypatch, **env) -> AppTest:
    for k in ("GPTLITE_CHECKPOINT", "GPTLITE_API_URL", "GPTLITE_API_KEY", "GPTLITE_RUNS_DIR"): monkeypatch.delenv(k, raising=False)
    for k, v in env.items(): monkeypatch.setenv(k, str(v))
    at = AppTest.from_file(APP, default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_generation_with_parameters_streams_the_library_text(runs, monkeypatch):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny", GPTLITE_RUNS_DIR=runs)
    assert "in-process" in at.sidebar.markdown[0].value and "parameters" in at.sidebar.success[0].value
    at.text_area(key="prompt").set_value("The baker")
    at.slider(key="max_new_tokens").set_value(30); at.slider(key="temperature").set_value(0.9)
    at.number_input(key="top_k").set_value(20); at.slider(key="top_p").set_value(0.95)
    at.slider(key="repetition_penalty").set_value(1.2); at.text_input(key="seed").set_value("5")
    at.text_input(key="stop").set_value("zzz").run()
    at.button(key="generate").click().run()
    assert not at.exception
    record = at.session_state["history"][-1]
    model, tok = load_checkpoint(runs / "tiny")
    expected = generate(model, tok, "The baker", max_new_tokens=30, temperature=0.9, top_k=20, top_p=0.95,
                        repetition_penalty=1.2, seed=5, stop=["zzz"])[0]
    assert record["text"] == expected.text and record["tokens"] == len(expected.token_ids)
    assert (record["temperature"], record["top_k"], record["seed"], record["stop"]) == (0.9, 20, 5, "zzz")
    assert record["tokens_per_s"] > 0 and record["seconds"] > 0
    view = at.get("html")[0].proto.body
    assert view.count("<span title=") == record["tokens"]                 # one coloured span per token
    assert "tokens in" in at.caption[0].value


def test_presets_fill_the_prompt(runs, monkeypatch):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny")
    for name, text in PRESETS.items():
        if text:
            at.selectbox(key="preset").set_value(name).run()
            assert at.text_area(key="prompt").value == text


def test_history_exports_and_statistics(runs, monkeypatch):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny")
    assert "Nothing generated yet" in at.info[0].value
    at.text_area(key="prompt").set_value("She said"); at.slider(key="max_new_tokens").set_value(12).run()
    for seed in ("1", "2", "3"):
        at.text_input(key="seed").set_value(seed).run()
        at.button(key="generate").click().run()
    history = at.session_state["history"]
    assert len(history) == 3 and [h["seed"] for h in history] == [1, 2, 3]
    assert [b.label for b in at.get("download_button")] == ["Export JSON", "Export CSV", "Export TXT"]
    assert json.loads(export_json(history)) == history
    rows = list(csv.DictReader(io.StringIO(export_csv(history))))
    assert [r["text"] for r in rows] == [h["text"] for h in history] and rows[0]["temperature"] == "0.8"
    assert export_txt(history).count("She said") == 3
    assert [m.value for m in at.metric][:2] == ["3", str(sum(h["tokens"] for h in history))]
    assert len(at.get("arrow_vega_lite_chart")) >= 3 or len(at.get("vega_lite_chart")) >= 3 or len(at.get("arrow_line_chart")) + len(at.get("arrow_bar_chart")) >= 3
    at.button(key="hist_clear").click().run()
    assert at.session_state["history"] == []


def test_batch_from_text_and_file(runs, monkeypatch):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny")
    at.button(key="batch_go").click().run()
    assert "no prompts" in at.warning[0].value
    at.text_area(key="batch_prompts").set_value("The baker\n\nIn the morning")
    at.file_uploader(key="batch_file").upload("prompts.txt", b"Once upon a time\nShe said\n", "text/plain")
    at.slider(key="max_new_tokens").set_value(10); at.text_input(key="seed").set_value("4").run()
    at.button(key="batch_go").click().run()
    assert not at.exception and "4 prompts" in at.success[0].value
    table = at.dataframe[0].value
    assert list(table["prompt"]) == ["The baker", "In the morning", "Once upon a time", "She said"]
    model, tok = load_checkpoint(runs / "tiny")
    expected = generate(model, tok, list(table["prompt"]), max_new_tokens=10, temperature=0.8, seed=4)
    assert list(table["text"]) == [c.text for c in expected]
    assert {b.label for b in at.get("download_button")} >= {"Download CSV", "Download JSON"}


def test_training_dashboard(runs, monkeypatch):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny", GPTLITE_RUNS_DIR=runs)
    assert at.selectbox(key="run").value == runs / "tiny"
    logs, evals = load_metrics(runs / "tiny")
    assert len(evals) == 3 and evals[-1]["step"] == 120
    text = " ".join(m.value for m in at.markdown)
    assert "M parameters" in text and f"{evals[-1]['val_bpb']:.3f} bits/byte" in text
    assert len(at.get("image")) == 1                                          # the loss and bits-per-byte figure
    assert list_runs(runs) == [runs / "tiny"]


def test_no_checkpoint_and_unreachable_api_say_what_to_do(runs, monkeypatch, tmp_path):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=tmp_path / "missing", GPTLITE_RUNS_DIR=tmp_path)
    assert "gptlite-train" in at.error[0].value and "--checkpoint" in at.error[0].value
    at.button(key="generate").click().run()
    assert not at.exception and len(at.main.error) == 1 and "see the message above" in at.info[0].value
    assert "No training runs" in at.info[-1].value
    port = free_port()                                                   # nothing listens there
    at = app(monkeypatch, GPTLITE_API_URL=f"http://127.0.0.1:{port}")
    assert "cannot reach" in at.sidebar.error[0].value and "python -m gptlite.api" in at.sidebar.error[0].value
    at.text_area(key="prompt").set_value("x").run()
    at.button(key="generate").click().run()
    assert not at.exception and "cannot generate" in at.error[0].value


def wait_http(url: str, proc, timeout: float = 90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.returncode
        try:
            if httpx.get(url, timeout=2).status_code == 200: return
        except httpx.TransportError: pass
        time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def api_server(tiny_run):
    runs = tiny_run.parent
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gptlite.api", "--checkpoint", str(runs / "tiny"), "--port", str(port),
                             "--log-level", "warning", "--model-name", "tiny"], env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc)
    yield url
    proc.terminate(); proc.wait(10)


def test_api_backend_against_a_real_server(runs, api_server, monkeypatch):
    at = app(monkeypatch, GPTLITE_API_URL=api_server)
    assert "API" in at.sidebar.markdown[0].value and "healthy" in at.sidebar.success[0].value
    at.text_area(key="prompt").set_value("The baker"); at.slider(key="max_new_tokens").set_value(20)
    at.slider(key="temperature").set_value(0.0).run()
    at.button(key="generate").click().run()
    assert not at.exception
    record = at.session_state["history"][-1]
    model, tok = load_checkpoint(runs / "tiny")
    assert record["text"] == generate(model, tok, "The baker", max_new_tokens=20, temperature=0)[0].text
    assert at.get("html")[0].proto.body.count("<span title=") == record["tokens"] == 20
    at.text_area(key="batch_prompts").set_value("The baker\nShe said").run()
    at.button(key="batch_go").click().run()
    batch = next(d.value for d in at.dataframe if "finish_reason" in d.value and "seed" not in d.value)
    assert list(batch["text"]) == [c.text for c in generate(model, tok, ["The baker", "She said"], max_new_tokens=20,
                                                            temperature=0)]


def test_token_view_helpers():
    assert prob_color(1.0) == "hsl(120, 75%, 82%)" and prob_color(0.0001) == "hsl(0, 75%, 82%)"
    page = token_html([TokenInfo("<b>", 0.5, {"a": 0.3}), TokenInfo("\n", 0.01)])
    assert "&lt;b&gt;" in page and "↵<br>" in page and "&#x27;a&#x27;: 0.300" in page


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
@pytest.mark.slow
def test_real_browser_generates_and_screenshots(runs):
    playwright = pytest.importorskip("playwright.sync_api")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPTLITE_RUNS_DIR": str(runs)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false", "--", "--checkpoint", str(runs / "tiny")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", proc)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("prompt", exact=True).wait_for(timeout=60_000)
            box = page.get_by_label("prompt", exact=True)
            box.fill("The baker")
            box.press("Control+Enter")                                  # a text area commits its value so
            page.wait_for_timeout(1500)
            page.locator('button[data-testid="stBaseButton-primary"]', has_text="Generate").click()   # the primary button
            page.get_by_text("How sure was the model?").wait_for(timeout=60_000)
            text = page.get_by_text("tokens in").first.inner_text()
            shown = page.locator('[data-testid="stMarkdownContainer"] strong', has_text="The baker").count()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
            browser.close()
        assert "tokens/s" in text and shown == 1 and not errors, errors
        assert (ARTIFACTS / "app.png").stat().st_size > 10_000
    finally:
        proc.terminate(); proc.wait(10)


def test_int8_in_process_backend(runs, monkeypatch):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny", GPTLITE_QUANTIZE="int8")
    assert "(int8)" in at.sidebar.markdown[0].value
    at.text_area(key="prompt").set_value("The baker"); at.slider(key="max_new_tokens").set_value(10).run()
    at.button(key="generate").click().run()
    assert not at.exception and 0 < at.session_state["history"][-1]["tokens"] <= 10


def shown_markdown(at) -> str:
    "The Generate tab's Markdown block that holds the prompt and the generated text."
    (block,) = [m.value for m in at.tabs[0].markdown if "**" in m.value or "(no prompt)" in m.value]   # the Generate tab
    return block


def as_typed(markdown: str) -> str:
    "Undo `markdown_text`: bold markers off, line breaks back to newlines, escapes off."
    import re
    return re.sub(r"\\(.)", r"\1", markdown.replace("**", "").replace("  \n", "\n"))


def test_markdown_text_is_shown_as_typed():
    from gptlite.app import markdown_text
    assert markdown_text("a\nb") == "a  \nb"                                    # a line break, not a space
    assert markdown_text("# not a heading *x* [y](z) :smile: $1") == \
        r"\# not a heading \*x\* \[y\]\(z\) \:smile\: \$1"
    assert markdown_text("ROMEO:\nBut soft\n", bold=True) == "**ROMEO\\:**  \n**But soft**  \n"   # no `****`
    assert markdown_text(" padded ", bold=True) == " **padded** "


def test_generated_text_keeps_its_line_breaks_and_a_trailing_newline_prompt_shows_no_stars(runs, monkeypatch):
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny")
    prompt = "ROMEO:\nBut soft\n"
    at.text_area(key="prompt").set_value(prompt); at.slider(key="max_new_tokens").set_value(40)
    at.text_input(key="seed").set_value("3").run()                          # a text with line breaks inside it
    at.button(key="generate").click().run()
    assert not at.exception
    text, block = at.session_state["history"][-1]["text"], shown_markdown(at)
    typed = (prompt + text).strip()                                         # st.markdown strips the ends of its text
    assert "\n" in text.strip() and "****" not in block and block.startswith("**ROMEO\\:**  \n**But soft**  \n")
    assert block.count("\n") == block.count("  \n") == typed.count("\n")  # every line break kept, as a line break
    assert as_typed(block) == typed


def test_batch_tab_refuses_more_prompts_than_the_api_takes(runs, monkeypatch):
    from gptlite.app import MAX_BATCH_PROMPTS
    at = app(monkeypatch, GPTLITE_CHECKPOINT=runs / "tiny")
    at.text_area(key="batch_prompts").set_value("\n".join(f"prompt {i}" for i in range(MAX_BATCH_PROMPTS + 1))).run()
    at.button(key="batch_go").click().run()
    assert not at.exception and f"at most {MAX_BATCH_PROMPTS}" in at.error[0].value and not at.dataframe
    assert MAX_BATCH_PROMPTS == 64


def test_the_api_back_end_keeps_one_http_client_across_reruns(monkeypatch):
    made = []
    real_init = httpx.Client.__init__
    def counting_init(self, *args, **kwargs):
        made.append(kwargs.get("base_url")); real_init(self, *args, **kwargs)
    monkeypatch.setattr(httpx.Client, "__init__", counting_init)
    url = f"http://127.0.0.1:{free_port()}"                                    # a URL no earlier test used
    at = app(monkeypatch, GPTLITE_API_URL=url)
    at.text_area(key="prompt").set_value("x").run()
    at.slider(key="max_new_tokens").set_value(5).run()
    assert not at.exception and made == [url]                                  # three runs, one client


def test_streamlit_binds_loopback_by_default(tmp_path):
    show = lambda cwd: subprocess.run([sys.executable, "-m", "streamlit", "config", "show"], cwd=cwd,
                                      capture_output=True, text=True, timeout=60).stdout
    assert '\naddress = "127.0.0.1"' in show(ROOT)                             # the repository's .streamlit/config.toml
    assert '\naddress = ' not in show(tmp_path)                                # elsewhere: Streamlit's default (unset)
