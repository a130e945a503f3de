"""Help texts and documented commands stay true (issue 16): every task and method an example names exists,
every `m2iv ...` command in the READMEs parses with the real parser, and benchmarks/run_all.sh too."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from m2iv.cli.main import build_parser, iter_parsers
from m2iv.data.tasks import TASKS
from m2iv.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
PARSERS = list(iter_parsers(build_parser()))
TASK_FLAGS = ("--task", "--prototype-from")


def _names(text: str, flags: tuple[str, ...]) -> set[str]:
    """Values given to `flags` on example lines (those running m2iv), split at commas; placeholders (TASK, T,
    <x>) and files (jsonl:..., x.json) are skipped."""
    found = set()
    for line in text.splitlines():
        if "m2iv " not in line and "m2iv.cli.main" not in line:
            continue
        for flag in flags:
            for value in re.findall(rf"(?<![\w-]){re.escape(flag)}[ =]+([^\s\\]+)", line):
                for name in value.strip("'\"`").split(","):
                    if name and not (name.isupper() or name[0] in "<{$" or ":" in name or name.endswith(".json")):
                        found.add(name)
    return found


def _help(parser, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at hyphens; unwrapped, names stay whole
    return parser.format_help()


@pytest.mark.parametrize(("path", "parser"), PARSERS, ids=[" ".join(p) or "m2iv" for p, _ in PARSERS])
def test_every_task_and_method_named_in_help_is_registered(path, parser, monkeypatch):
    # Was: `m2iv train --help` showed `--task sandbox-colour-words`, a task that does not exist.
    text = _help(parser, monkeypatch)
    tasks = _names(text, TASK_FLAGS) | set(re.findall(r"(?<![\w/.-])(sandbox-[a-z]+(?:-[a-z]+)*)", text))
    assert not {t for t in tasks if t not in TASKS}, f"unregistered tasks in `m2iv {' '.join(path)} --help`"
    methods = _names(text, ("--method",))
    assert not {m for m in methods if m not in METHODS}, f"unregistered methods in `m2iv {' '.join(path)} --help`"


def test_the_name_finder_sees_what_it_checks():
    text = "m2iv train sandbox --task sandbox-colour-words --out o\n  m2iv bench compare x --method icl,nope --task T"
    assert _names(text, TASK_FLAGS) == {"sandbox-colour-words"} and _names(text, ("--method",)) == {"icl", "nope"}


def _readme_commands(path: Path) -> list[list[str]]:
    """`m2iv ...` lines of the fenced code blocks (split at && and ;, comments dropped)."""
    commands, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced and line.lstrip().startswith("m2iv "):
            for part in re.split(r"&&|;", line.split(" #")[0]):
                words = shlex.split(part)
                if words and words[0] == "m2iv" and "..." not in words:
                    commands.append(words[1:])
    return commands


def test_every_readme_example_parses():
    commands = _readme_commands(ROOT / "README.md")
    assert len(commands) >= 8
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"README example `m2iv {shlex.join(argv)}` does not parse (exit {e.code})")


def _parser_for(argv: list[str]):
    """The deepest subcommand parser named by the words of argv."""
    found, path = build_parser(), ()
    for word in argv:
        for p, parser in PARSERS:
            if p == (*path, word):
                found, path = parser, p
                break
        else:
            break
    return found, path


@pytest.mark.parametrize("doc", ["README.md", "benchmarks/README.md"])
def test_every_flag_in_inline_commands_exists(doc):
    # Inline `m2iv ...` spans often leave out --out; every flag they do show must be the command's own.
    spans = [" ".join(m.split()) for m in re.findall(r"`(m2iv [^`]*)`", (ROOT / doc).read_text())]
    checked = 0
    for span in spans:
        words = span.split()[1:]
        parser, path = _parser_for(words)
        known = {s for a in parser._actions for s in a.option_strings}
        unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in known]
        assert not unknown, f"{doc}: `{span}` uses {unknown}, not flags of `m2iv {' '.join(path)}`"
        checked += bool(path)
    assert checked >= 2


def test_run_all_commands_parse(tmp_path):
    # Every step of benchmarks/run_all.sh, run with a parse-only stand-in for the m2iv command.
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "run_all.sh", tmp_path / "benchmarks" / "run_all.sh")
    log = tmp_path / "parsed.txt"
    stub = tmp_path / "parse_only.py"
    stub.write_text("import sys\nfrom m2iv.cli.main import build_parser\nbuild_parser().parse_args(sys.argv[1:])\n"
                    f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:3]) + '\\n')\n")
    env = {**os.environ, "M2IV": f"{sys.executable} {stub}",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    steps = ("build demo suite curve compare compare-long efficiency serving compare-26 sweep-v1 many-shot library "
             "report")
    r = subprocess.run(["bash", str(tmp_path / "benchmarks" / "run_all.sh"), *steps.split()], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(log.read_text().splitlines()) == 44  # efficiency x3, sweep-v1 x21, compare-26 x10
