"""mkdocs hook: the methods catalogue in docs/methods.md, generated from the registry at build time.

``mkdocs.yml`` declares this file under ``hooks:``. On the page ``methods.md`` the marker
``<!-- methods-catalogue -->`` is replaced by one entry per registered method (and modifier):

* the paper: the first sentence of the method file's module docstring (``dkd: Zhao, Cui, ...
  "Decoupled Knowledge Distillation", CVPR 2022.``);
* code: the repositories the docstring names (``owner/name`` and ``github.com/owner/name``; RepDistiller
  where the docstring names it);
* defaults: ``methods.method_defaults(name)``;
* tests: the files under ``tests/`` that name the method in a string literal (``"kd"``, ``"crd+kd"``,
  ``"kd.T=2"``, ``--methods vanilla,kd``), or are named after it (``test_method_<name>.py``).

Nothing is written to ``docs/``: the page is rebuilt from the registry on every build, so a new
method file appears in the site without editing the page. ``catalogue_markdown()`` is also what
``tests/test_docs.py`` checks.
"""
from __future__ import annotations

import ast
import io
import re
import sys
import tokenize
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's packages, whichever kdbench is installed
    sys.path.insert(0, str(ROOT))
MARKER = "<!-- methods-catalogue -->"
# RepDistiller is named in the docstrings by its project name, not as owner/name
NAMED_PROJECTS = {"RepDistiller": "HobbitLong/RepDistiller"}
# owner/name look-alikes in the docstrings that are not repositories
_REPO = re.compile(r"(?<![\w/.`-])(?:https?://)?(?:github\.com/)?([A-Za-z][\w-]*/[A-Za-z][\w.-]*\w)(?![\w/])")
_NOT_REPOS = re.compile(r"^(model/method|train/eval|dL/dtheta|[A-Za-z]+V\d/[A-Za-z]*V?\d+|ShuffleV1/V2)$")


def _module_doc(name: str) -> str:
    import methods

    cls = methods.method_class(name)
    return sys.modules[cls.__module__].__doc__ or ""


def paper(doc: str) -> str:
    """The first sentence of the docstring's first paragraph, lines joined (the citation often wraps)."""
    first = " ".join(doc.strip().split("\n\n", 1)[0].split())
    quotes = [m.start() for m in re.finditer('"', first)]
    start = quotes[1] if len(quotes) >= 2 else 0  # after the title, which may hold full stops
    end = first.find(". ", start)
    return first if end < 0 else first[: end + 1]


def repositories(doc: str) -> list[str]:
    """The repositories a docstring names, in the order it names them."""
    text = re.sub(r"-\n\s*", "-", doc)  # a URL wrapped after a hyphen
    found: list[str] = []
    for project, repo in NAMED_PROJECTS.items():
        if re.search(rf"\b{project}\b", text):
            found.append(repo)
    for m in _REPO.finditer(text):
        repo = m.group(1).rstrip(".")
        if _NOT_REPOS.match(repo) or repo in found:
            continue
        found.append(repo)
    return found


@lru_cache(maxsize=1)
def _test_strings() -> dict[str, set[str]]:
    """Each test file's words taken from its string literals without spaces (method lists, --set keys)."""
    words: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found: set[str] = set()
        try:
            tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
        except (tokenize.TokenError, SyntaxError):  # pragma: no cover - a broken test file
            continue
        for tok in tokens:
            if tok.type != tokenize.STRING:
                continue
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):  # f-strings
                value = tok.string.strip("fFrRbB'\"")
            if not isinstance(value, str) or " " in value.strip():
                continue
            found.update(w for w in re.split(r"[,+:=.\[\]\s/]", value) if w)
        words[rel] = found
    return words


def tests_naming(name: str) -> list[str]:
    return [f for f, words in _test_strings().items()
            if name in words or Path(f).stem in (f"test_method_{name}", f"test_{name}")]


def _defaults(name: str) -> str:
    import methods

    if name in methods.list_modifiers():
        return "(a modifier: its values replace the base method's; see its docstring)"
    parts = methods.method_defaults(name)
    values = parts.get(name, {})
    return ", ".join(f"`{k}={v!r}`" for k, v in values.items()) or "none"


def catalogue_markdown() -> str:
    import methods

    names = list(methods.list_methods()) + [m for m in methods.list_modifiers() if m not in methods.list_methods()]
    lines = [f"{len(names)} entries, generated from the registry (`methods.list_methods()`, "
             "`methods.list_modifiers()`) when the site was built.", ""]
    for name in names:
        doc = _module_doc(name)
        repos = repositories(doc)
        tests = tests_naming(name)
        lines += [
            f"### `{name}`",
            "",
            f"- **Paper:** {paper(doc)}",
            "- **Code the docstring names:** " + (", ".join(f"[{r}](https://github.com/{r})" for r in repos)
                              or "none named in the docstring"),
            f"- **Defaults:** {_defaults(name)}",
            f"- **Source:** `methods/{sys.modules[methods.method_class(name).__module__].__name__.split('.')[-1]}.py`",
            "- **Tests naming it:** " + (", ".join(f"`{t}`" for t in tests) or "none by name "
                                         "(the registry-wide tests run it)"),
            "",
        ]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs hook
    if page.file.src_uri == "methods.md" and MARKER in markdown:
        return markdown.replace(MARKER, catalogue_markdown())
    return markdown
