// MathJax settings for the docs site. This file loads before MathJax itself (mkdocs.yml's extra_javascript), which
// .ci/docs.py copies into the site from the django-static-mathjax package: no formula needs another host.
//
// pymdownx.arithmatex (generic mode) turns `$...$` into <span class="arithmatex">\(...\)</span> and `$$...$$` into
// <div class="arithmatex">\[...\]</div>. MathJax typesets inside those elements and nowhere else, so a dollar sign
// in code, in a notebook's output or in the API reference is never read as math.
window.MathJax = {
  tex: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true},
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex"},
};

// With the theme's navigation.instant feature a new page replaces the old one without a reload: typeset it too.
// (On a full page load MathJax typesets by itself once it has started.)
if (window.document$) {
  document$.subscribe(() => {
    if (window.MathJax && MathJax.typesetPromise) {
      MathJax.startup.promise = MathJax.startup.promise.then(() => {
        MathJax.typesetClear();
        MathJax.texReset();
        return MathJax.typesetPromise();
      });
    }
  });
}
