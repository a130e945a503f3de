"""Methods as plug-ins: every way of adapting a model to a task (zero-shot, ICL, M²IV, each baseline)
answers the same three questions for the evaluation runner and the trainer:

- `prompt_shots(shots)`: how many demonstrations go into the prompt (ICL: all; vector methods: none);
- `prepare(lm, task, splits, options)`: fit or load what the method needs (vectors, masks);
- `inference(lm)`: a context manager active while the model answers (hooks on, then removed).

A method registers itself with `register_method(name, cls)`; `m2iv eval --method NAME` looks it up.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any

from m2iv.registry import Registry


class Method:
    name = "base"
    uses_vectors = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.vectors = None  # InContextVectors once prepared, for vector methods
        self.vector_config: dict = {}

    def prompt_shots(self, shots: int) -> int:
        return 0

    def prepare(self, lm, task, splits: dict, options: dict[str, Any] | None = None) -> None:
        """Fit or load; called once before evaluation."""

    def inference(self, lm, key=None):
        """Context active while the model answers; `key` is a route from `groups` (library:auto)."""
        return nullcontext()

    def describe(self) -> dict:
        return {"method": self.name, **({"vectors": self.options.get("vectors")} if self.uses_vectors else {})}


class ZeroShot(Method):
    name = "zero-shot"


class ICL(Method):
    name = "icl"

    def prompt_shots(self, shots: int) -> int:
        return shots


class LoadedVectors(Method):
    """A vector method. With `--vectors DIR` it loads and injects a saved vector directory; otherwise it
    `fit`s (trains or extracts) vectors on the task's train/support splits and saves them to `out`.

    Subclasses override `fit(lm, task, splits) -> (InContextVectors, info)`; a fit that saves its own
    directory (the trainer does, atomically, with its recipe) sets `info["saved"] = True`.
    """

    name = "vectors"
    uses_vectors = True
    config_cls: type | None = None  # the method's settings dataclass, recorded in the vector config

    @property
    def trainable(self) -> bool:
        return type(self).fit is not LoadedVectors.fit

    def fit(self, lm, task, splits: dict):
        from m2iv.errors import M2IVError

        raise M2IVError(f"--method {self.name} needs --vectors DIR or library:NAME (vectors from `m2iv train`)")

    def method_config(self):
        cfg = self.options.get("method_config")
        if cfg is None and self.config_cls is not None:
            cfg = self.config_cls()
        return cfg

    def prepare(self, lm, task, splits: dict, options: dict[str, Any] | None = None) -> None:
        from dataclasses import asdict, is_dataclass

        from m2iv.errors import M2IVError
        from m2iv.vectors.format import load_vectors, save_vectors

        path = self.options.get("vectors")
        if not path:
            self.vectors, self.info = self.fit(lm, task, splits)
            out = self.options.get("out")
            if out and not self.info.get("saved"):
                cfg = self.method_config()
                save_vectors(self.vectors, out, adapter=lm.adapter, base_model=lm.spec,
                             method_config={**(asdict(cfg) if is_dataclass(cfg) else {}), "task": task.name},
                             metrics=self.info.get("metrics", {}), extra={"training": self.info})
            return
        if path == "library:auto":
            return self._prepare_routes(lm, splits)
        self.vectors, self.vector_config = load_vectors(path, adapter=lm.adapter,
                                                        strict=self.options.get("strict", True),
                                                        device=lm.model.device)
        if self.name not in ("vectors", self.vector_config.get("method")):
            raise M2IVError(f"{path} holds {self.vector_config.get('method')!r} vectors, not {self.name!r}; "
                            f"use --method {self.vector_config.get('method')} or --method vectors")

    def _prepare_routes(self, lm, splits: dict) -> None:
        """library:auto: pick, per test query, the compatible library entry whose task prototype is
        nearest to the query (search by example), and load each chosen entry once."""
        from m2iv.library import Library

        lib = Library(self.options.get("library_root"))
        samples = list(splits["test"])
        ids = lib.route(lm, samples, strict=self.options.get("strict", True))
        self.routes = {s.id: i for s, i in zip(samples, ids)}
        self.routed = {i: lib.load(i, adapter=lm.adapter, device=lm.model.device)[0] for i in dict.fromkeys(ids)}
        self.vector_config = {"routes": {i: lib.get(i).name for i in self.routed}}

    def groups(self, samples: list) -> list[tuple[str | None, list]]:
        """Queries grouped by the vectors that answer them (one group unless routing)."""
        if not getattr(self, "routes", None):
            return [(None, samples)]
        out: dict[str, list] = {}
        for s in samples:
            out.setdefault(self.routes[s.id], []).append(s)
        return list(out.items())

    @contextmanager
    def inference(self, lm, key=None):
        from m2iv.vectors.inject import apply

        vectors = self.routed[key] if key is not None else self.vectors
        # Answering trains nothing, so the base weights keep their requires_grad (see `inject`).
        with apply(lm.model, vectors, lm.adapter, freeze_base=False) as handle:
            yield handle

    def require_out(self) -> str:
        from m2iv.errors import M2IVError

        out = self.options.get("out")
        if not out:
            raise M2IVError(f"--method {self.name} needs --vectors DIR or library:NAME, or train it first with "
                            f"`m2iv train MODEL --task T --method {self.name} --out DIR`")
        return out


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str, cls: type[Method]) -> None:
    METHODS.register(name, cls)


register_method("zero-shot", ZeroShot)
register_method("icl", ICL)
register_method("vectors", LoadedVectors)


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    return METHODS.get(name)(options)
