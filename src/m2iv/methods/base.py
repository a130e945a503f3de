"""Methods as plug-ins: every way of adapting a model to a task (zero-shot, ICL, M²IV, each baseline) is a class
that answers the same questions, in the order a run asks them:

- `spec`: its settings, resolved once when the method is made (`spec.resolve_spec`, the one merge of defaults,
  the method's own recipe and what the caller set);
- `fit(lm, task, splits)` -> (vectors, info), then `save(...)`: training or extraction, and the one place a
  vector directory is written (`m2iv train`, `bench`);
- `prepare(lm, task, splits)`: what answering needs (vectors handed over in memory, or loaded from `--vectors`,
  or a `library:auto` route); it never fits;
- `prompt_shots(shots)`: how many demonstrations go into the prompt (ICL: all; vector methods: none);
- `inference(lm)`: a context manager active while the model answers (hooks on, then removed);
- `encode(lm, builder, pairs)` then `generate(lm, batch, handle, **kw)`: how a batch of (query, demonstrations) is
  answered (default: one prompt per query, `model.generate`); the runner times `generate` only. A method with its
  own decoding (Parallel-ICL: several contexts per query, merged token by token) overrides both.

A plug-in carries its own metadata (settings class, recipe defaults, bench budget, variants, learning-rate grid)
and registers itself with `register_method(name, cls)`: a new method is one module (or folder) and one test.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

from m2iv.errors import M2IVError
from m2iv.methods.spec import MethodSpec, resolve_spec
from m2iv.registry import Registry
from m2iv.train.config import TrainConfig

if TYPE_CHECKING:
    import torch

    from m2iv.data.sample import Sample
    from m2iv.vectors.vector import InContextVectors


class Method:
    name = "base"
    uses_vectors = False
    config_cls: ClassVar[type | None] = None  # the method's settings dataclass, recorded with its vectors
    from_recipe: ClassVar[dict[str, str]] = {}  # recipe flags that stand for one of the settings (MTV: steps)
    # What a benchmark reads off the method (evaluate/bench.py holds no per-method table):
    cpu_budget: ClassVar[dict[str, Any]] = {}  # settings under `bench --budget cpu` (a 2-core CPU's search budget)
    variants: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = (("", {}),)  # rows of a comparison: name, settings
    lr_fields: ClassVar[tuple[str, tuple[str, ...]] | None] = None  # ("method_config" | "train", its rate fields)
    lr_grid: ClassVar[tuple[float, ...]] = ()  # `--lr-sweep default`: one decade either side of the original
    tiny_budget: ClassVar[dict[str, Any]] = {}  # settings under `bench --budget tiny`: seconds on a tiny model

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.spec: MethodSpec = resolve_spec(type(self), self.options)
        self.vectors: InContextVectors | None = None  # once prepared, for vector methods
        self.vector_config: dict = {}

    @classmethod
    def fits(cls) -> bool:
        """Whether `m2iv train` has something to fit for this method (vectors, an adapter)."""
        return False

    @classmethod
    def recipe_defaults(cls, settings: Any) -> dict[str, Any]:
        """The method's own training recipe (TrainConfig fields; its original paper's), from its settings."""
        return {}

    def method_config(self) -> Any:
        """The method's typed settings (resolved once, see `spec`)."""
        return self.spec.settings

    def recipe(self) -> TrainConfig:
        """The training recipe (resolved once, see `spec`)."""
        return self.spec.recipe

    def prompt_shots(self, shots: int) -> int:
        return 0

    def splits_needed(self) -> tuple[str, ...]:
        """The task splits this method reads (a zero-shot run reads only the test split's files)."""
        return ("train", "support", "test")

    def prepare(self, lm, task, splits: dict) -> None:
        """What answering needs, before the first query; never trains."""

    def inference(self, lm, key=None):
        """Context active while the model answers; `key` is a route from `groups` (library:auto)."""
        return nullcontext()

    def groups(self, samples: list) -> list[tuple[str | None, list]]:
        """Queries grouped by what answers them (one group unless routing)."""
        return [(None, samples)]

    def describe(self) -> dict:
        return {"method": self.name, **({"vectors": self.options.get("vectors")} if self.uses_vectors else {})}

    def encode(self, lm, builder, pairs: list[tuple[Sample, list[Sample]]]) -> dict:
        """The model inputs of a batch of (query, its demonstrations): one left-padded prompt per query."""
        prompts = [builder.build(demos, q) for q, demos in pairs]
        return {**builder.encode(prompts), "prompt_text": [p.text for p in prompts]}

    def generate(self, lm, batch: dict, handle, **kwargs) -> tuple[torch.Tensor, list[int]]:
        """(the new tokens (B, N), each query's prompt tokens): `model.generate` on `encode`'s batch, the token
        policy told where each query starts."""
        batch = {k: v for k, v in batch.items() if k != "prompt_text"}
        query_start = batch.pop("query_start")
        if handle is not None and hasattr(handle, "set_query_start"):
            handle.set_query_start(query_start)
        batch = {k: v.to(lm.device) for k, v in batch.items()}
        gen = lm.model.generate(**batch, **kwargs)
        return gen[:, batch["input_ids"].shape[1]:], batch["attention_mask"].sum(dim=1).tolist()


class ZeroShot(Method):
    name = "zero-shot"

    def splits_needed(self) -> tuple[str, ...]:
        return ("test",)


class ICL(Method):
    name = "icl"

    def prompt_shots(self, shots: int) -> int:
        return shots

    def splits_needed(self) -> tuple[str, ...]:
        return ("support", "test")


class LoadedVectors(Method):
    """A vector method: `fit` trains or extracts vectors on the task's train/support splits, `save` writes them,
    `prepare` makes them ready to answer (in memory after `use`, or loaded from `--vectors DIR` / `library:NAME`,
    or routed per query with `library:auto`). Without vectors, answering is an error that says to train first.

    Subclasses override `fit(lm, task, splits) -> (vectors, info)`; `info` may carry `recipe` and `metrics`
    (the trainer's) and `complete` (False: stopped early, nothing to save)."""

    name = "vectors"
    uses_vectors = True
    routable: ClassVar[bool] = True  # answers `library:auto` (trained adapters are no library entries)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.info: dict = {}
        self.router: Any = None  # library:auto: a `Router` choosing each query's vectors

    @classmethod
    def fits(cls) -> bool:
        return cls.fit is not LoadedVectors.fit

    @property
    def trainable(self) -> bool:
        return self.fits()

    def splits_needed(self) -> tuple[str, ...]:
        """Saved vectors answer from the test split alone; fitting reads the training and support splits too."""
        return ("test",) if self.options.get("vectors") or self.vectors is not None else ("train", "support", "test")

    def fit(self, lm, task, splits: dict) -> tuple[Any, dict]:
        raise M2IVError(f"--method {self.name} has nothing to fit; it answers with --vectors DIR or library:NAME "
                        "(vectors from `m2iv train`)")

    # -- fit, save, use: training and extraction ----------------------------------------------------------------
    def train(self, lm, task, splits: dict, out: str | None = None) -> tuple[Any, dict]:
        """fit -> save (when `out` is given and the fit completed) -> use: the vectors ready to answer."""
        vectors, info = self.fit(lm, task, splits)
        out = out or self.options.get("out")
        if out and info.get("complete", True):
            self.save(lm, task, vectors, info, out)
        self.use(vectors, info)
        return vectors, info

    def save(self, lm, task, vectors, info: dict, out: str) -> None:
        """The one place a method's vectors are written: settings, recipe, metrics and the training record in one
        shape for every method. Under `accelerate` only the main process writes."""
        from m2iv.dist import state as dist_state

        state = dist_state()
        if state.is_main_process:
            record = {k: v for k, v in info.items() if k not in ("recipe", "metrics", "complete", "trained_with")}
            extra = {"training": record, **({"trained_with": info["trained_with"]} if "trained_with" in info else {})}
            self.write(lm, vectors, out, recipe=info.get("recipe"), metrics=info.get("metrics", {}),
                       method_config={**self.spec.settings_json(), "task": task.name,
                                      "task_version": getattr(task, "version", None)}, extra=extra)
        state.wait_for_everyone()

    def write(self, lm, vectors, out: str, **fields) -> None:
        """The directory format (a vector directory; trained adapters write PEFT's)."""
        from m2iv.vectors.format import save_vectors

        save_vectors(vectors, out, adapter=lm.adapter, base_model=lm.spec, **fields)

    def use(self, vectors, info: dict | None = None, config: dict | None = None) -> None:
        """Answer with `vectors` already in memory (the bench hands trained vectors over without a reload)."""
        self.vectors = vectors
        self.info = dict(info or {})
        self.vector_config = dict(config or {"method": self.name})

    # -- answering ------------------------------------------------------------------------------------------
    def prepare(self, lm, task, splits: dict) -> None:
        if self.vectors is not None:  # handed over in memory (`use`), or prepared before
            self.vectors = self.vectors.to(lm.device)
            return
        self.require_vectors()
        path = self.options["vectors"]
        if path == "library:auto" and self.routable:
            from m2iv.library.routing import Router

            self.router = Router.fit(lm, list(splits["test"]), root=self.options.get("library_root"),
                                     strict=self.options.get("strict", True))
            self.vector_config = {"routes": self.router.names()}
            return
        self.load(lm, path)

    def require_vectors(self) -> None:
        """Answering needs vectors: handed over, or named by `--vectors`; never fitted on the fly."""
        if self.vectors is None and not self.options.get("vectors"):
            hint = (f"train them first (`m2iv train MODEL --task T --method {self.name} --out DIR`), then "
                    if self.trainable else "")
            raise M2IVError(f"--method {self.name} answers with vectors: {hint}give --vectors DIR or library:NAME")

    def load(self, lm, path: str) -> None:
        """Vectors from a directory, a Hub id or `library:NAME`, checked against this model."""
        from m2iv.library.resolve import load_spec

        self.vectors, self.vector_config = load_spec(path, adapter=lm.adapter, strict=self.options.get("strict", True),
                                                     device=lm.device, root=self.options.get("library_root"))
        if self.name not in ("vectors", self.vector_config.get("method")):
            raise M2IVError(f"{path} holds {self.vector_config.get('method')!r} vectors, not {self.name!r}; "
                            f"use --method {self.vector_config.get('method')} or --method vectors")

    def groups(self, samples: list) -> list[tuple[str | None, list]]:
        """Queries grouped by the vectors that answer them (one group unless routing)."""
        return self.router.groups(samples) if self.router is not None else [(None, samples)]

    def vector_sets(self) -> dict[str, Any]:
        """Every set of vectors this method answers with, by route ("" when not routing)."""
        if self.router is not None:
            return dict(self.router.vectors)
        return {"": self.vectors} if self.vectors is not None else {}

    @contextmanager
    def inference(self, lm, key=None):
        from m2iv.vectors.inject import apply

        vectors = self.router.vectors[key] if key is not None else self.vectors
        if vectors is None:
            raise M2IVError(f"--method {self.name}: no vectors prepared; prepare() loads them first")
        # Answering trains nothing, so the base weights keep their requires_grad (see `inject`). A condition the
        # vectors carry gates them unless the run asks for the vectors everywhere (`condition: False`).
        with apply(lm.model, vectors, lm.adapter, freeze_base=False,
                   condition=self.options.get("condition", True)) as handle:
            yield handle

    def train_options(self) -> dict[str, Any]:
        """How `train_vectors` runs for this method (not what it trains): the progress line and trackers."""
        return {"show_progress": self.options.get("progress", True), "report_to": self.options.get("report_to")}

    def require_out(self) -> str:
        """Where the trainer keeps its checkpoints (next to the vector directory it is training for)."""
        out = self.options.get("out")
        if not out:
            raise M2IVError(f"--method {self.name} trains: give --out DIR "
                            f"(`m2iv train MODEL --task T --method {self.name} --out DIR`)")
        return out


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str, cls: type[Method]) -> None:
    METHODS.register(name, cls)


register_method("zero-shot", ZeroShot)
register_method("icl", ICL)
register_method("vectors", LoadedVectors)


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    return METHODS.get(name)(options)
