"The docs site: built from the notebooks with `python .ci/docs.py`, opened page by page in headless Chromium."
import shutil
import socket
import subprocess
import sys
import time
from urllib.parse import urljoin, urlparse

import httpx
import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow                         # builds the whole site, then a browser opens every page

ARTIFACTS = ROOT / "tests" / "artifacts"
PAGES = ["", "tokenizer/", "data/", "attention/", "model/", "training/", "sampling/", "lab/", "engine/", "schemas/", "settings/",
         "routes/", "api/", "app/"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "docs.py"), "--site-dir", str(out), "--no-readme"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            if httpx.get(url).status_code == 200: break
        except httpx.TransportError: time.sleep(0.1)
    yield url, out
    server.terminate(); server.wait(10)


def test_every_notebook_is_a_page_in_pipeline_order(site):
    url, out = site
    for page in PAGES: assert (out / page / "index.html").is_file(), page
    home = httpx.get(url).text
    positions = [home.find(f'href="{p}"') for p in PAGES[1:]]                  # the navigation, in pipeline order
    assert all(p > 0 for p in positions) and positions == sorted(positions), positions
    assert (out / "search" / "search_index.json").is_file()


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_pages_load_without_errors_figures_links_and_api_reference(site):
    playwright = pytest.importorskip("playwright.sync_api")
    url, out = site
    problems, internal = [], set()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"{page.url}: {e}"))
        figures = 0
        for path in PAGES:
            page.goto(url + path, wait_until="load")
            images = page.eval_on_selector_all("article img", "els => els.map(e => [e.src, e.complete && e.naturalWidth > 0])")
            problems += [f"{path}: broken image {src}" for src, ok in images if not ok]
            figures += len(images)
            for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
                if href.startswith(url): internal.add(href.split("#")[0])
        page.goto(url + "model/")
        api = page.locator("h3#gpt")                                             # show_doc of the model class
        assert api.count() == 1 and "A decoder-only transformer language model." in page.content()
        assert page.locator("a", has_text="source").count() > 5                   # links to the source
        page.locator("h3#param_table").evaluate("e => e.scrollIntoView()")       # an API reference and a figure
        page.wait_for_timeout(300)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "docs_model.png"))
        browser.close()
    assert figures >= 15, figures                                                 # the notebooks' matplotlib figures
    broken = [h for h in sorted(internal) if httpx.get(h).status_code != 200]
    assert not broken, broken
    assert not problems, problems[:10]


def test_display_math_gets_a_block_of_its_own_outside_code():
    "Jupyter shows `$$...$$` as a display formula anywhere in a paragraph; arithmatex needs a block of its own."
    import importlib.util
    spec = importlib.util.spec_from_file_location("docs", ROOT / ".ci" / "docs.py")
    docs = importlib.util.module_from_spec(spec); spec.loader.exec_module(docs)
    assert docs.display_math("so\n$$a = b$$\nthen") == "so\n\n\n$$a = b$$\n\n\nthen"
    assert docs.display_math("$$\na\n\nb\n$$") == "\n\n$$\na\nb\n$$\n\n"              # a blank line would end the block
    assert docs.display_math("- item $$x$$ more") == "- item \n\n    $$x$$\n\n    more"      # stays in the list item
    for code in ["use `$$` here", "```sh\necho $$ $PWD\n```", "a \\$\\$5 note"]:
        assert docs.display_math(code) == code


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_math_is_typeset_by_the_site_own_mathjax_and_nothing_comes_from_other_hosts(site):
    playwright = pytest.importorskip("playwright.sync_api")
    url, out = site
    requests, pages = [], {}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        for path in PAGES:
            page.goto(url + path, wait_until="load")
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("() => MathJax.startup.promise.then(() => true)")      # every formula typeset
            page.wait_for_load_state("networkidle")                              # and the fonts they asked for
            pages[path] = page.evaluate("""() => ({
                formulas: document.querySelectorAll("article .arithmatex").length,
                typeset: document.querySelectorAll("article .arithmatex mjx-container").length,
                display: document.querySelectorAll("article mjx-container[display='true']").length,
                errors: document.querySelectorAll("article mjx-merror").length,
                in_code: document.querySelectorAll("article pre mjx-container, article code mjx-container").length,
                text: document.querySelector("article").innerText})""")
        browser.close()
    sampling = pages["sampling/"]                                  # $T$, $T < 1$, ...
    assert sampling["formulas"] >= 5, sampling["formulas"]
    assert pages["attention/"]["display"] >= 1 and pages["engine/"]["display"] >= 1   # $$...$$: the attention formula
    assert "$T$" not in sampling["text"] and "\\(T\\)" not in sampling["text"]
    for path, found in pages.items():
        assert (found["typeset"], found["errors"]) == (found["formulas"], 0), path   # all typeset, no TeX errors
        assert not found["in_code"], path                                        # `$...$` in code stays code
    assert any("/mathjax/output/chtml/fonts/" in u for u in requests)            # MathJax's fonts, from this site
    other_hosts = sorted({u for u in requests if not u.startswith(url) and not u.startswith("data:")})
    assert not other_hosts, other_hosts
