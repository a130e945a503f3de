"""The documentation holds together: no reference to a file outside the repository, no internal issue numbers, a
README that opens with what a newcomer needs, and a benchmarks page that opens with its summary table and plots."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Backticked paths into the repository's own folders, and every *.md name, must exist.
REPO_PATH = re.compile(r"`((?:src|tests|docs|benchmarks)/[\w./-]+\.\w+)`")
# "issue 14", "(issue 16)", "#27"; an upstream project's tracker named with it ("safetensors issue #584") is a citation.
INTERNAL_ISSUE = r"\bissues? \d+|(?<!issue )(?<![\w&])#\d+\b"
MD_NAME = re.compile(r"(?<![\w/.-])([\w./-]*[\w-]+\.md)\b")


def _exists(name: str, doc: Path) -> bool:
    name = name.split("#")[0]
    if (ROOT / name).exists() or (doc.parent / name).exists():
        return True
    return "/" not in name and any(ROOT.glob(f"**/{name}"))  # a bare file name mentioned in passing


def test_no_reference_to_a_file_outside_the_repository():
    # Was: the README cited `m2iv-method.md §2`, a file that is not in the repository.
    missing = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        links = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http", "#", "mailto:"))]
        for name in {*links, *REPO_PATH.findall(text), *MD_NAME.findall(text)}:
            if not _exists(name, doc):
                missing.append(f"{doc.relative_to(ROOT)}: {name}")
    for src in (ROOT / "src").rglob("*.py"):  # module docstrings point at docs too
        for name in MD_NAME.findall(ast.get_docstring(ast.parse(src.read_text(encoding="utf-8"))) or ""):
            if name.startswith("docs/") and not (ROOT / name).exists():
                missing.append(f"{src.relative_to(ROOT)}: {name}")
    assert missing == []
    assert not any("m2iv-method" in p.read_text(encoding="utf-8") for p in [*DOCS, *(ROOT / "src").rglob("*.py")])


def test_no_internal_issue_numbers_in_the_documentation():
    # Was: benchmarks/README.md named "(issue 14)", "(issue 16)" ... throughout.
    found = [f"{doc.relative_to(ROOT)}: {m.group(0)}" for doc in DOCS
             for m in re.finditer(INTERNAL_ISSUE, doc.read_text(encoding="utf-8"), re.I)]
    assert found == []


def _first(text: str, pattern: str) -> int:
    m = re.search(pattern, text, re.M | re.S)
    assert m, pattern
    return m.start()


def test_the_readme_opens_with_what_it_is_the_two_commands_a_picture_python_and_the_cli():
    # Was: the README opened with a wall of measured numbers before the method was explained.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    what = _first(text, r"^\*\*m2iv\*\* is ")
    commands = _first(text, r"^```bash\nmake demo .*\nmake test ")
    picture = _first(text, r"!\[[^\]]+\]\(([^)]+\.png)\)")
    python = _first(text, r"^```python\n")
    cli = _first(text, r"^```bash\nm2iv ")
    assert what < commands < picture < python < cli
    assert (ROOT / re.search(r"!\[[^\]]+\]\(([^)]+\.png)\)", text).group(1)).is_file()
    assert len(text.splitlines()) < 200  # the rest lives in docs/
    for doc in ("models-and-data", "methods", "formats", "training", "python-api", "method-notes"):
        assert f"(docs/{doc}.md)" in text


def test_the_benchmarks_page_opens_with_one_summary_table_and_its_plots():
    # Was: 593 lines of prose, the tables scattered through it.
    text = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    first_section = text.index("\n## ")
    opening = text[:first_section]
    assert opening.count("\n| method |") == 1 and "**M²IV**" in opening
    plots = re.findall(r"!\[[^\]]+\]\(([^)]+\.png)\)", opening)
    assert plots and all((ROOT / "benchmarks" / p).is_file() for p in plots)
    assert opening.index("| method |") < opening.index("![")
