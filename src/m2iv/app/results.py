"""The committed benchmark tables as data: every `benchmarks/**/*.json` written by `m2iv bench` (rows of task,
method, score), read as they are. The Results page plots one table; an entry's page shows the rows of its task
(zero-shot, ICL, its method) from every table, each with the file it came from.

    bench = Benchmarks("benchmarks")
    bench.names()                     # ['compare/sandbox.json', 'sandbox_suite.json', ...]
    rows = bench.rows("compare/sandbox.json")
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from m2iv.errors import M2IVError

MAX_TABLE_BYTES = 16 << 20
PREFERRED = ("compare/sandbox.json", "sandbox_suite.json")  # shown first when present


def default_dir() -> Path | None:
    """`./benchmarks` when run from a checkout, else the one beside the sources (an editable install)."""
    for candidate in (Path.cwd() / "benchmarks", Path(__file__).resolve().parents[3] / "benchmarks"):
        if candidate.is_dir():
            return candidate
    return None


def _label(method: str, variant: str) -> str:
    return method + (f" ({variant})" if variant else "")


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _from_config(row: dict) -> dict:
    """`m2iv bench library` rows name a `config` ("icl-16shot", "m2iv", "caps + french") under an `application`
    instead of a method: read the method and shots out of it."""
    m = re.fullmatch(r"(.+?)-(\d+)shot", row["config"])
    method, shots = (m.group(1), int(m.group(2))) if m else (row["config"], row.get("shots"))
    return {**row, "method": method, "shots": shots, "variant": row.get("variant") or ""}


def normalise(row: dict, source: str) -> dict | None:
    """One table row in the shape every page uses, or None for a row that is not a scored cell."""
    if isinstance(row, dict) and "method" not in row and isinstance(row.get("config"), str):
        row = _from_config(row)
    if not isinstance(row, dict) or not isinstance(row.get("task"), str) or not isinstance(row.get("method"), str):
        return None
    variant = str(row.get("variant") or "")
    shots = row.get("shots")
    return {"task": row["task"], "method": row["method"], "variant": variant,
            "label": _label(row["method"], variant), "shots": shots if isinstance(shots, int) else 0,
            "score": _number(row.get("score")), "metric": str(row.get("metric") or ""),
            "n": row.get("n") if isinstance(row.get("n"), int) else None,
            "prompt_tokens": _number(row.get("mean_prompt_tokens", row.get("prompt_tokens"))),
            "latency_ms": _number(row.get("mean_latency_ms", row.get("latency_ms"))),
            "parameters": row.get("parameters") if isinstance(row.get("parameters"), int) else None,
            "fits": row.get("fits") is not False, "source": source}


class Benchmarks:
    """The bench tables under one folder, each read once (and again when its file changes)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root).expanduser() if root else None
        self._cache: dict[str, tuple[float, list[dict]]] = {}

    def names(self) -> list[str]:
        """Every bench table under the folder (relative paths), the preferred ones first."""
        if self.root is None or not self.root.is_dir():
            return []
        libraries = {p.parent for p in self.root.rglob("index.sqlite")}  # a committed library's sidecars: not tables
        found = []
        for path in sorted(self.root.rglob("*.json")):
            if libraries & set(path.parents):
                continue
            name = path.relative_to(self.root).as_posix()
            try:
                if self.rows(name):
                    found.append(name)
            except M2IVError:
                continue  # not a bench table (a summary, a library file, a damaged file): not listed
        return sorted(found, key=lambda n: (n not in PREFERRED, PREFERRED.index(n) if n in PREFERRED else 0, n))

    def _path(self, name: str) -> Path:
        if self.root is None:
            raise M2IVError("no benchmarks folder; start the app from a checkout or pass --benchmarks DIR")
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents or path.suffix != ".json":
            raise M2IVError(f"{name!r} is not a table under {self.root}; pick one from the list")
        return path

    def rows(self, name: str) -> list[dict]:
        """The scored rows of the table `name` (a path relative to the folder)."""
        path = self._path(name)
        try:
            stat = path.stat()
            if stat.st_size > MAX_TABLE_BYTES:
                raise M2IVError(f"{path} is over {MAX_TABLE_BYTES >> 20} MB; it is not read")
            cached = self._cache.get(name)
            if cached is not None and cached[0] == stat.st_mtime:
                return cached[1]
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise M2IVError(f"cannot read the bench table {path} ({type(e).__name__}: {e}); regenerate it with "
                            "`m2iv bench`") from None
        raw = data.get("rows") if isinstance(data, dict) else None
        rows = [r for r in (normalise(x, name) for x in raw or []) if r is not None]
        self._cache[name] = (stat.st_mtime, rows)
        return rows

    def for_task(self, task: str | None, methods: tuple[str, ...]) -> list[dict]:
        """Rows of `task` whose method is one of `methods`, from every table, best known first per method."""
        if not task:
            return []
        out = []
        for name in self.names():
            out += [r for r in self.rows(name) if r["task"] == task and r["method"] in methods]
        order = {m: i for i, m in enumerate(methods)}
        return sorted(out, key=lambda r: (order[r["method"]], r["shots"], r["label"], r["source"]))


__all__ = ["Benchmarks", "default_dir", "normalise"]
