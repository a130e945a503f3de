"""m2iv: vectorized multimodal in-context learning (M²IV and its baselines) for Hugging Face LVLMs.

    import m2iv
    lm = m2iv.load_model("tiny:idefics3")
    task = m2iv.Task.from_samples("colours", train=train_rows, test=test_rows)
    vectors = m2iv.train(lm, task, out="out/colours", shots=4, steps=20)
    print(m2iv.evaluate(lm, task, vectors=vectors)["score"])
    print(m2iv.SteeredModel(lm, vectors).answer("What colour is it?", images=["shape.png"]))

`m2iv.train` and `m2iv.evaluate` are the subpackages of those names, made callable: calling them runs
`m2iv.api.run.train` / `m2iv.api.run.evaluate`, while `m2iv.train.trainer`, `m2iv.data.tasks`, ... stay the
modules they are (a plain function of the same name would hide the subpackage from `m2iv.train.<module>` lookups).
"""

import types as _types
from importlib import import_module as _import_module

from m2iv.api import run as _run
from m2iv.api.prompt import prompt
from m2iv.api.steered import SteeredModel
from m2iv.constants import __version__
from m2iv.data.sample import Sample
from m2iv.data.tasks import Task, get_task
from m2iv.errors import M2IVError
from m2iv.library.resolve import load_spec as load_vectors  # a vector directory, library:<id-or-name> or hf://org/name
from m2iv.models import LoadedModel, ModelAdapter, discover, load_model
from m2iv.train.config import TeacherConfig, TrainConfig
from m2iv.vectors import InContextVectors, SiteSpec, apply, inject, save_vectors


class _CallablePackage(_types.ModuleType):
    """A subpackage that is also the API function of its name."""

    def __call__(self, *args, **kwargs):
        return getattr(_run, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


for _name in ("train", "evaluate"):
    _import_module(f"m2iv.{_name}").__class__ = _CallablePackage
    globals()[_name] = _import_module(f"m2iv.{_name}")

__all__ = ["InContextVectors", "LoadedModel", "M2IVError", "ModelAdapter", "Sample", "SiteSpec", "SteeredModel",
           "Task", "TeacherConfig", "TrainConfig", "__version__", "apply", "discover", "evaluate", "get_task",
           "inject", "load_model", "load_vectors", "prompt", "save_vectors", "train"]
