"""`--config FILE.yaml`: flag values from a YAML file, for `m2iv train` and `m2iv bench ...`, as lm-eval reads a
task's YAML. Keys are the command's flag names without the dashes (`steps`, `lr-vectors` or `lr_vectors`), plus
`model` for the positional MODEL; a flag given on the command line wins over the file.

    # train.yaml
    model: sandbox
    task: sandbox-colour-nonce
    shots: 16
    steps: 200
    report-to: [tensorboard]
    method-config: {token_policy: all}       # a repeatable KEY=VALUE flag takes a mapping (or a list)

    m2iv train --config train.yaml --out out/colour --steps 50      # 50 steps: the command line wins

The file's values become command-line words placed before the user's own, so every value is checked by the same
parser (types, choices, required flags) and argparse's last-one-wins rule lets the command line override them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from m2iv.errors import M2IVError

FLAG = "--config"


def _leaf(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.ArgumentParser, int]:
    """The (sub)parser the command line names, and where its own words start in `argv`."""
    node, i = parser, 0
    while True:
        sub = next((a for a in node._actions if isinstance(a, argparse._SubParsersAction)), None)
        j = i
        while j < len(argv) and argv[j].startswith("-"):
            j += 1
        if sub is None or j >= len(argv) or argv[j] not in sub.choices:
            return node, i
        node, i = sub.choices[argv[j]], j + 1


def _split_config(words: list[str]) -> tuple[str | None, list[str]]:
    """(the --config value, the words without it)."""
    path, rest, i = None, [], 0
    while i < len(words):
        w = words[i]
        if w == FLAG and i + 1 < len(words):
            path, i = words[i + 1], i + 2
            continue
        if w.startswith(FLAG + "="):
            path = w.split("=", 1)[1]
        else:
            rest.append(w)
        i += 1
    return path, rest


def _has_positional(parser: argparse.ArgumentParser, words: list[str]) -> bool:
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("-") and w != "-":
            action = parser._option_string_actions.get(w.split("=", 1)[0])
            if action is not None and action.nargs != 0 and "=" not in w:
                i += 1
        else:
            return True
        i += 1
    return False


def _action(parser: argparse.ArgumentParser, key: str) -> argparse.Action | None:
    option = parser._option_string_actions.get("--" + key.replace("_", "-"))
    if option is not None:
        return option
    dest = key.replace("-", "_")
    return next((a for a in parser._actions if a.dest == dest and a.option_strings), None)


def _words(action: argparse.Action, key: str, value: Any, path: str) -> list[str]:
    flag = action.option_strings[-1]
    if action.nargs == 0:  # a switch
        if not isinstance(value, bool):
            raise M2IVError(f"{path}: {key} is a switch; give true or false, not {value!r}")
        return [flag] if value else []
    if isinstance(action, argparse._AppendAction):
        items = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in value.items()] \
            if isinstance(value, dict) else value if isinstance(value, list) else [value]
        return [w for item in items for w in (flag, str(item))]
    if isinstance(value, dict):
        raise M2IVError(f"{path}: {key} takes one value or a list, not a mapping")
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value).lower() \
        if isinstance(value, bool) else str(value)
    return [flag, text]


def expand_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`argv` with a `--config FILE` replaced by the file's flags, placed before the command line's own."""
    leaf, start = _leaf(parser, argv)
    path, words = _split_config(argv[start:])
    if path is None or FLAG not in leaf._option_string_actions:
        return argv
    import yaml

    try:
        data = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as e:
        raise M2IVError(f"--config {path}: cannot read it ({e.strerror or e}); give a YAML file of flag values") \
            from None
    except yaml.YAMLError as e:
        raise M2IVError(f"--config {path} is not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise M2IVError(f"--config {path} must hold a mapping of flag names to values (e.g. `steps: 20`)")
    head, given = [], []
    for key, value in data.items():
        key = str(key)
        if key == "model":
            if not _has_positional(leaf, words):  # a MODEL on the command line wins
                head = [str(value)]
            continue
        action = _action(leaf, key)
        if action is None or key.lstrip("-") in ("config", "help"):
            flags = sorted(a.option_strings[-1].lstrip("-") for a in leaf._actions
                           if a.option_strings and a.dest not in ("help", "config"))
            raise M2IVError(f"--config {path}: {key!r} is not a flag of `{leaf.prog}`; keys: model, "
                            f"{', '.join(flags)}")
        given += _words(action, key, value, path)
    return argv[:start] + head + given + words
