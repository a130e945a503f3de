"""A method's settings, resolved once: the one place where defaults, the method's own recipe and what the caller
set are merged. Everything below the edge (the CLI, the Python API, a bench plan) reads the resolved `MethodSpec`
and merges nothing.

    spec = resolve_spec(LIVE, {"method_config": {"lr_vectors": 0.1}, "train_config": {"steps": 60}, "shots": 16})
    spec.settings.lr_vectors, spec.recipe.steps, spec.recipe.teacher.shots      # 0.1, 60, 16

The rule, the same for every method: dataclass defaults <- the method's own defaults (its original paper's recipe,
`Method.recipe_defaults(settings)`) <- every field the caller set, even one equal to a default <- an explicit
`shots` (the settings' shots field and the teacher's shots) and explicit recipe fields that stand for one of the
settings (`Method.from_recipe`). A value is explicit by being present, never by differing from a default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from typing import Any

from m2iv.errors import M2IVError
from m2iv.train.config import TeacherConfig, TrainConfig

# The fields of a method's settings that `--shots` sets (first one the settings have): one name per role.
SHOTS_FIELDS = ("shots", "n_demos")


@dataclass(frozen=True)
class MethodSpec:
    """What a method runs with. `recipe_set` names the recipe fields the caller set, so a method may derive the
    others from its data (HiFICL's steps from its epochs) without merging settings again."""

    name: str
    settings: Any  # the method's settings dataclass (None for a method without settings)
    recipe: TrainConfig
    recipe_set: frozenset[str]
    shots: int | None
    seed: int

    def settings_json(self) -> dict:
        """The settings as saved next to the vectors and recorded in a run's identity: one shape for every method."""
        return asdict(self.settings) if is_dataclass(self.settings) and not isinstance(self.settings, type) else {}


def resolve_spec(method_cls: Any, options: dict[str, Any]) -> MethodSpec:
    """The spec of `method_cls` under `options` (`method_config`, `train_config`, `shots`, `seed`)."""
    cfg = settings(getattr(method_cls, "config_cls", None), options.get("method_config"), options,
                   getattr(method_cls, "from_recipe", {}))
    defaults = method_cls.recipe_defaults(cfg) if cfg is not None else {}
    user = options.get("train_config")
    user_keys = set(asdict(user)) if isinstance(user, TrainConfig) else set(user or {})
    shots = options.get("shots")
    return MethodSpec(name=getattr(method_cls, "name", "base"), settings=cfg,
                      recipe=recipe(defaults, user, options), recipe_set=frozenset(user_keys),
                      shots=None if shots is None else int(shots), seed=int(options.get("seed") or 0))


def settings(config_cls: type | None, given: Any, options: dict[str, Any], from_recipe: dict[str, str] | None = None
             ) -> Any:
    """The typed settings: dataclass defaults <- `given` (a dataclass is taken whole, a dict sets exactly its keys)
    <- an explicit `shots` on the settings' shots field <- explicit recipe fields on the settings they stand for
    (`from_recipe`: recipe field -> settings field, e.g. MTV's REINFORCE steps are `--steps`)."""
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
