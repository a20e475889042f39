#!/usr/bin/env python
"""Build the docs site from the notebooks, and README.md from nbs/index.ipynb.

    python .ci/docs.py                 # _docs/ (static HTML) and README.md
    python .ci/docs.py --check         # the same, and exit 1 if README.md was out of date (CI)

nbdev's own docs commands need Quarto, which cannot be installed here; this does the same job with nbdev's notebook
processing (`nbdev.serve.proc_nbs`: renders `show_doc`, drops hidden and exported cells, adds front matter) and
MkDocs with the Material theme. Steps: process the notebooks into `_proc/`; convert each processed notebook (as JSON:
the processed files carry metadata that fails nbformat validation) to Markdown in `_docs_src/`, figures written out
as PNG files; `mkdocs build --strict` into `_docs/`; write README.md from nbs/index.ipynb. Deploy `_docs/` to GitHub
Pages with `mkdocs gh-deploy` or the workflow in `.github/workflows/`.

Math: `$...$` and `$$...$$` in the notebooks' Markdown become formulas. `pymdownx.arithmatex` (mkdocs.yml) marks them
up, leaving code spans and code blocks alone, and MathJax typesets them in the browser. The site serves MathJax
itself, so it loads nothing from other hosts and works offline: MathJax 3's browser build is copied into `mathjax/`
from the django-static-mathjax package (a dev requirement; it needs no Django, only the files it ships), and the
settings in `docs_assets/javascripts/mathjax.js` (everything under `docs_assets/` is copied into the site as it is).
"""
import argparse, base64, importlib.util, json, re, shutil, subprocess, sys
from pathlib import Path

import configparser

import yaml

ROOT = Path(__file__).resolve().parents[1]
NBS, SRC, ASSETS = ROOT / "nbs", ROOT / "_docs_src", ROOT / "docs_assets"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
README_HEADER = "<!-- Generated from nbs/index.ipynb by `python .ci/docs.py`: edit the notebook, not this file. -->"


def front_matter(cell) -> dict:
    text = "".join(cell["source"]).strip()
    return yaml.safe_load(text.strip("-")) or {} if cell["cell_type"] == "raw" and text.startswith("---") else {}


def directives(source: str) -> tuple[dict, str]:
    "nbdev/Quarto `#| key: value` lines at the top of a cell, and the rest of the source."
    found, lines = {}, source.split("\n")
    while lines and lines[0].startswith("#|"):
        key, _, value = lines.pop(0)[2:].strip().partition(":")
        found[key.strip()] = value.strip()
    return found, "\n".join(lines).strip("\n")


def fence(text: str, lang: str = "") -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def outputs_md(outputs: list, page: str, counter: list) -> list[str]:
    parts = []
    for o in outputs:
        if o["output_type"] == "stream":
            parts.append(fence(ANSI.sub("", "".join(o["text"])), "text"))
        elif o["output_type"] in ("execute_result", "display_data"):
            data = o.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data: continue      # live widgets need a kernel
            if "image/png" in data:
                counter[0] += 1
                name = f"{page}_{counter[0]}.png"
                (SRC / "figures").mkdir(exist_ok=True)
                (SRC / "figures" / name).write_bytes(base64.b64decode("".join(data["image/png"])))
                parts.append(f"![figure {counter[0]} of {page}](figures/{name})")
            elif "text/markdown" in data: parts.append("".join(data["text/markdown"]))
            elif "text/html" in data: parts.append("".join(data["text/html"]))
            elif "text/plain" in data: parts.append(fence(ANSI.sub("", "".join(data["text/plain"])), "text"))
        elif o["output_type"] == "error":
            raise SystemExit(f"{page}: a notebook output is an error: {o.get('ename')}: {o.get('evalue')}")
    return parts


CODE_OR_DISPLAY_MATH = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[^\n]*\n.*?^[ \t]*(?P=fence)[ \t]*$"       # a code block
    r"|(?P<ticks>`+)(?!`).+?(?<!`)(?P=ticks)(?!`)"                          # a code span
    r"|(?<!\\)\$\$(?P<math>.+?)(?<!\\)\$\$[ \t]*", re.M | re.S)              # a display formula

def display_math(md: str) -> str:
    """Each `$$...$$` formula as a paragraph of its own, without blank lines inside it. Jupyter shows such a formula as
    display math wherever it stands; arithmatex only when it is a block of its own (else it leaves `$$` in the text).
    Code spans and code blocks are left as they are."""
    def repl(m):
        if m.group("math") is None: return m.group()
        line = md[md.rfind("\n", 0, m.start()) + 1:m.start()]
        lead, marker = re.match(r"([ \t]*)((?:[-*+]|\d+[.)])[ \t]+)?", line).groups()
        indent = lead.expandtabs(4) + "    " * bool(marker)          # in a list item, stay there (Python-Markdown: 4)
        formula = re.sub(r"\n[ \t]*\n", "\n", m.group("math"))               # a blank line would end the block
        return f"\n\n{indent}$${formula}$$\n\n{indent}"
    return CODE_OR_DISPLAY_MATH.sub(repl, md)


def copy_mathjax(dest: Path) -> str:
    """MathJax 3's browser build into `dest`, from the django-static-mathjax package; returns MathJax's version.
    Of the combined files only `tex-chtml.js` (TeX in, HTML out, the menu, assistive MathML), with all the parts it
    may load later: TeX packages on first use, fonts, the menu's renderer and accessibility options."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or spec.origin is None:
        raise SystemExit("MathJax is missing: pip install django-static-mathjax (a dev requirement in settings.ini)")
    root = Path(spec.origin).parent / "static" / "mathjax"
    es5 = root / "es5"
    shutil.copytree(es5, dest, ignore=lambda folder, names: [
        n for n in names if Path(folder) == es5 and n.endswith(".js") and n != "tex-chtml.js"])
    shutil.copy2(root / "LICENSE", dest / "LICENSE")                            # Apache 2.0
    return json.loads((root / "package.json").read_text())["version"]


def site_url() -> str:
    "Where nbdev's links to the API reference point (settings.ini's doc_host + doc_baseurl)."
    cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
    return cfg["DEFAULT"]["doc_host"].rstrip("/") + "/" + cfg["DEFAULT"]["doc_baseurl"].strip("/") + "/"

def local_links(md: str) -> str:
    "nbdev links to the published reference (`.../model.html#gptconfig`) become links between the pages of this site."
    return re.sub(re.escape(site_url()) + r"([\w-]+)\.html(#[\w-]+)?", lambda m: f"{m.group(1)}.md{m.group(2) or ''}", md)


def notebook_md(path: Path) -> tuple[str, str, str]:
    "A processed notebook as (page file name, title, Markdown)."
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    fm = front_matter(cells[0]) if cells else {}
    page = Path(fm.get("output-file", path.stem + ".html")).stem
    title = fm.get("title", path.stem)
    parts = [f"# {title}"]
    if fm.get("description"): parts.append(f"> {fm['description']}")
    counter = [0]
    for cell in cells[1:] if fm else cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if source.strip() and "AUTOGENERATED" not in source: parts.append(display_math(source).strip("\n"))
        elif cell["cell_type"] == "code":
            d, code = directives(source)
            if code and d.get("echo", "true") != "false": parts.append(fence(code, "python"))
            parts += outputs_md(cell.get("outputs", []), page, counter)
    return page + ".md", title, local_links("\n\n".join(parts) + "\n")


def build_readme() -> str:
    "README.md from nbs/index.ipynb, as nbdev_readme would: the title cell as a heading and a quote, code as Python."
    nb = json.loads((NBS / "index.ipynb").read_text())
    out = [README_HEADER, ""]
    for c in nb["cells"]:
        src = "".join(c["source"]).strip("\n")
        if c["cell_type"] == "markdown":
            m = re.match(r"^# (.+)\n+> (.+)$", src, re.S)
            if m and len(out) == 2: out += [f"# {m.group(1).strip()}", "", f"> {m.group(2).strip()}", ""]; continue
            out += [src.replace("](images/", "](nbs/images/"), ""]
        elif c["cell_type"] == "code":
            if src.startswith("#|"): continue
            src = src.replace("../data", "data").replace("../saved_models", "saved_models")
            if len(out) >= 2 and out[-2].startswith("```python\n"):          # consecutive code cells: one block
                out[-2] = fence(out[-2][len("```python\n"):-len("\n```")] + "\n" + src, "python"); continue
            out += [fence(src, "python"), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main():
    ap = argparse.ArgumentParser(description="Build the docs site (_docs/) and README.md from the notebooks.")
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md was out of date with nbs/index.ipynb")
    ap.add_argument("--site-dir", default=str(ROOT / "_docs"))
    ap.add_argument("--no-readme", action="store_true", help="leave README.md alone (the docs tests use this)")
    args = ap.parse_args()
    from nbdev.serve import proc_nbs
    proc = Path(proc_nbs(n_workers=1, force=True))
    shutil.rmtree(SRC, ignore_errors=True); SRC.mkdir()
    if (NBS / "images").is_dir(): shutil.copytree(NBS / "images", SRC / "images")
    shutil.copytree(ASSETS, SRC, dirs_exist_ok=True)
    mathjax = copy_mathjax(SRC / "mathjax")
    order = sorted(proc.glob("*.ipynb"), key=lambda p: (p.stem != "index", p.stem))   # index, then pipeline order
    nav = []
    for path in order:
        name, title, md = notebook_md(path)
        (SRC / name).write_text(md)
        nav.append({"Home" if name == "index.md" else title: name})
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(SRC), site_dir=str(Path(args.site_dir).resolve()), nav=nav)
    (SRC.parent / "_mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(SRC.parent / "_mkdocs.yml")])
    if r.returncode: raise SystemExit(f"mkdocs build --strict failed ({r.returncode})")
    readme, old = build_readme(), (ROOT / "README.md").read_text() if (ROOT / "README.md").exists() else ""
    if args.no_readme: readme = old
    (ROOT / "README.md").write_text(readme)
    print(f"site: {args.site_dir} ({len(nav)} pages, MathJax {mathjax}); "
          f"README.md {'unchanged' if readme == old else 'rewritten'}")
    if args.check and readme != old:
        raise SystemExit("README.md was out of date with nbs/index.ipynb: it has been regenerated; commit it")


if __name__ == "__main__": main()
