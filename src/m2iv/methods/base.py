"""Methods as plug-ins: every way of adapting a model to a task (zero-shot, ICL, M²IV, each baseline)
answers the same three questions for the evaluation runner and the trainer:

- `prompt_shots(shots)`: how many demonstrations go into the prompt (ICL: all; vector methods: none);
- `prepare(lm, task, splits, options)`: fit or load what the method needs (vectors, masks);
- `inference(lm)`: a context manager active while the model answers (hooks on, then removed);
- `encode(lm, builder, pairs)` then `generate(lm, batch, handle, **kw)`: how a batch of (query, demonstrations) is
  answered (default: one prompt per query, `model.generate`); the runner times `generate` only. A method with its
  own decoding (Parallel-ICL: several contexts per query, merged token by token) overrides both.

A method registers itself with `register_method(name, cls)`; `m2iv eval --method NAME` looks it up.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import asdict, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from m2iv.errors import M2IVError
from m2iv.registry import Registry
from m2iv.train.config import TeacherConfig, TrainConfig

if TYPE_CHECKING:
    import torch

    from m2iv.data.sample import Sample
    from m2iv.vectors.vector import InContextVectors

# The fields of a method's settings that `--shots` sets (first one the settings have): one name per role.
SHOTS_FIELDS = ("shots", "n_demos")


class Method:
    name = "base"
    uses_vectors = False

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.vectors: InContextVectors | None = None  # once prepared, for vector methods
        self.vector_config: dict = {}

    def prompt_shots(self, shots: int) -> int:
        return 0

    def splits_needed(self) -> tuple[str, ...]:
        """The task splits this method reads (a zero-shot run reads only the test split's files)."""
        return ("train", "support", "test")

    def prepare(self, lm, task, splits: dict, options: dict[str, Any] | None = None) -> None:
        """Fit or load; called once before evaluation."""

    def inference(self, lm, key=None):
        """Context active while the model answers; `key` is a route from `groups` (library:auto)."""
        return nullcontext()

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
    """A vector method. With `--vectors DIR` it loads and injects a saved vector directory; otherwise it
    `fit`s (trains or extracts) vectors on the task's train/support splits and saves them to `out`.

    Subclasses override `fit(lm, task, splits) -> (InContextVectors, info)`; a fit that saves its own
    directory (the trainer does, atomically, with its recipe) sets `info["saved"] = True`.
    """

    name = "vectors"
    uses_vectors = True
    config_cls: type | None = None  # the method's settings dataclass, recorded in the vector config
    from_recipe: ClassVar[dict[str, str]] = {}  # recipe flags that stand for one of the settings (MTV: steps -> steps)

    @property
    def trainable(self) -> bool:
        return type(self).fit is not LoadedVectors.fit

    def splits_needed(self) -> tuple[str, ...]:
        """Saved vectors answer from the test split alone; fitting reads the training and support splits too."""
        return ("test",) if self.options.get("vectors") else ("train", "support", "test")

    def fit(self, lm, task, splits: dict):
        raise M2IVError(f"--method {self.name} needs --vectors DIR or library:NAME (vectors from `m2iv train`)")

    def method_config(self):
        """The method's typed settings under the one settings rule (`settings`), computed once."""
        if "_settings" not in self.__dict__:
            self._settings = settings(self.config_cls, self.options.get("method_config"), self.options,
                                      self.from_recipe)
        return self._settings

    def recipe(self, method_defaults: dict[str, Any] | None = None) -> TrainConfig:
        """The training recipe under the one settings rule: TrainConfig's defaults <- this method's own
        defaults (its original paper's recipe) <- every field the user set (`train_config`), even one equal to a
        default <- an explicit `shots` as the teacher's shots."""
        return recipe(method_defaults, self.options.get("train_config"), self.options)

    def prepare(self, lm, task, splits: dict, options: dict[str, Any] | None = None) -> None:
        from m2iv.library.resolve import load_spec
        from m2iv.vectors.format import save_vectors

        path = self.options.get("vectors")
        if not path:
            self.vectors, self.info = self.fit(lm, task, splits)
            out = self.options.get("out")
            if out and not self.info.get("saved") and self.vectors is not None:
                cfg = self.method_config()
                fields_set = asdict(cfg) if is_dataclass(cfg) and not isinstance(cfg, type) else {}
                save_vectors(self.vectors, out, adapter=lm.adapter, base_model=lm.spec,
                             method_config={**fields_set, "task": task.name},
                             metrics=self.info.get("metrics", {}), extra={"training": self.info})
            return
        if path == "library:auto":
            return self._prepare_routes(lm, splits)
        self.vectors, self.vector_config = load_spec(path, adapter=lm.adapter, strict=self.options.get("strict", True),
                                                     device=lm.device, root=self.options.get("library_root"))
        if self.name not in ("vectors", self.vector_config.get("method")):
            raise M2IVError(f"{path} holds {self.vector_config.get('method')!r} vectors, not {self.name!r}; "
                            f"use --method {self.vector_config.get('method')} or --method vectors")

    def _prepare_routes(self, lm, splits: dict) -> None:
        """library:auto: pick, per test query, the compatible library entry whose task prototype is
        nearest to the query (search by example), and load each chosen entry once."""
        from m2iv.library.store import Library

        lib = Library(self.options.get("library_root"))
        samples = list(splits["test"])
        ids: list[str] = lib.route(lm, samples, strict=self.options.get("strict", True))
        self.routes: dict[str, str] = {s.id: i for s, i in zip(samples, ids, strict=True)}
        self.routed: dict[str, InContextVectors] = {
            i: lib.load(i, adapter=lm.adapter, device=lm.device)[0] for i in dict.fromkeys(ids)}
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
        if vectors is None:
            raise M2IVError(f"--method {self.name}: no vectors prepared; prepare() loads or fits them first")
        # Answering trains nothing, so the base weights keep their requires_grad (see `inject`). A condition the
        # vectors carry gates them unless the run asks for the vectors everywhere (`condition: False`).
        with apply(lm.model, vectors, lm.adapter, freeze_base=False,
                   condition=self.options.get("condition", True)) as handle:
            yield handle

    def train_options(self) -> dict[str, Any]:
        """How `train_vectors` runs for this method (not what it trains): the progress line and trackers."""
        return {"show_progress": self.options.get("progress", True), "report_to": self.options.get("report_to")}

    def require_out(self) -> str:
        out = self.options.get("out")
        if not out:
            raise M2IVError(f"--method {self.name} needs --vectors DIR or library:NAME, or train it first with "
                            f"`m2iv train MODEL --task T --method {self.name} --out DIR`")
        return out


def settings(config_cls: type | None, given: Any, options: dict[str, Any], from_recipe: dict[str, str] | None = None
             ) -> Any:
    """One rule for every method's settings: the dataclass defaults <- what the caller set (`given`: a dataclass
    is taken whole, a dict sets exactly its keys) <- an explicit `shots` option on the settings' shots field, and
    explicit recipe fields on the settings they stand for (`from_recipe`: recipe field -> settings field, e.g.
    MTV's REINFORCE steps are `--steps`). A value is explicit by being present, never by differing from a default."""
    if config_cls is None:
        if given:
            raise M2IVError("this method has no settings; drop --method-config")
        return None
    if is_dataclass(given) and not isinstance(given, type):
        cfg, set_keys = given, set()
    else:
        cfg, set_keys = config_cls(**check_keys(config_cls, dict(given or {}))), set(given or {})
    names = {x.name for x in fields(config_cls)}
    user = options.get("train_config")
    user = asdict(user) if isinstance(user, TrainConfig) else dict(user or {})
    shots_field = next((f for f in SHOTS_FIELDS if f in names), None)
    flags = {shots_field: ("shots", options.get("shots"))} if shots_field else {}
    flags.update({field: (key, user.get(key)) for key, field in (from_recipe or {}).items()})
    for field, (flag, value) in flags.items():
        if value is None:
            continue
        if field in set_keys and getattr(cfg, field) != value:
            raise M2IVError(f"--{flag.replace('_', '-')} {value} and --method-config {field}={getattr(cfg, field)} "
                            f"disagree; set it once")
        cfg = replace(cfg, **{field: value})
    return cfg


def check_keys(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """`values` if every key is a field of the dataclass `cls`, else a one-line error listing the fields."""
    known = {f.name for f in fields(cls)}
    bad = sorted(set(values) - known)
    if bad:
        raise M2IVError(f"unknown setting(s) {', '.join(bad)} for {cls.__name__}; valid: {', '.join(sorted(known))}")
    return values


def recipe(method_defaults: dict[str, Any] | None, user: Any, options: dict[str, Any]) -> TrainConfig:
    """TrainConfig defaults <- `method_defaults` <- `user` (a dict of the fields the user set, or a whole
    TrainConfig, every field of which counts as set) <- an explicit `shots` option as the teacher's shots."""
    user = asdict(user) if isinstance(user, TrainConfig) else dict(user or {})
    mine = dict(method_defaults or {})
    given = user.pop("teacher", None) or {}
    teacher = {**mine.pop("teacher", {}), **(asdict(given) if isinstance(given, TeacherConfig) else dict(given))}
    if options.get("shots") is not None:
        teacher["shots"] = int(options["shots"])
    merged = {**mine, **user}
    check_keys(TrainConfig, merged)
    return TrainConfig(**merged, teacher=TeacherConfig(**check_keys(TeacherConfig, teacher)))


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str, cls: type[Method]) -> None:
    METHODS.register(name, cls)


register_method("zero-shot", ZeroShot)
register_method("icl", ICL)
register_method("vectors", LoadedVectors)


def get_method(name: str, options: dict[str, Any] | None = None) -> Method:
    return METHODS.get(name)(options)
