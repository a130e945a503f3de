"""Trained adapters as methods (LoRA, the KV cartridge): trained by the vector trainer, saved as PEFT directories.

    m2iv train sandbox --task T --method lora --out out/lora   # adapter_config.json, adapter_model.safetensors
    m2iv eval sandbox --task T --method lora --vectors out/lora --out runs/lora

They behave as vector methods everywhere (`--vectors DIR` loads, `bench compare` trains and reuses them), only the
directory is PEFT's (plus m2iv's sidecar) and `inference` attaches the adapter's own hooks.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from m2iv.errors import M2IVError
from m2iv.methods.base import LoadedVectors


class TrainedAdapter(LoadedVectors):
    """Subclasses set `name` and `config_cls` and implement `make_adapter(lm, task, splits, seed)` (the untrained
    adapter) and `recipe_defaults(settings)` (their original recipe as TrainConfig fields)."""

    routable = False

    def make_adapter(self, lm, task, splits: dict, seed: int):
        raise NotImplementedError

    def fit(self, lm, task, splits: dict):
        from m2iv.train.run import train_vectors

        out = self.require_out()
        recipe = self.recipe()
        adapter = self.make_adapter(lm, task, splits, recipe.seed)
        best, info = train_vectors(lm, task, splits, adapter, recipe, out, method_config=self.spec.settings_json(),
                                   show_progress=self.options.get("progress", True))
        return best.to(lm.device), info

    def write(self, lm, vectors, out: str, **fields) -> None:
        """PEFT's adapter directory, plus m2iv's sidecar."""
        from m2iv.adapters.peft_dir import save_adapter

        save_adapter(vectors, out, lm=lm, **fields)

    def load(self, lm, path: str) -> None:
        from m2iv.adapters.peft_dir import load_adapter

        if str(path).startswith("library:"):
            raise M2IVError(f"--method {self.name} loads a PEFT adapter directory, not a library entry; give "
                            "--vectors DIR (from `m2iv train --method " + self.name + "`)")
        self.vectors, self.vector_config = load_adapter(path, lm, strict=self.options.get("strict", True))
        if self.vector_config.get("method") != self.name:
            raise M2IVError(f"{path} holds a {self.vector_config.get('method')!r} adapter, not {self.name!r}; use "
                            f"--method {self.vector_config.get('method')}")

    @contextmanager
    def inference(self, lm, key=None):
        if self.vectors is None:
            raise M2IVError(f"--method {self.name}: no adapter prepared; prepare() loads it first")
        adapter: Any = self.vectors
        # Answering trains nothing: base weights keep requires_grad (see vectors/inject for why it matters).
        with adapter.attach(lm, freeze_base=False) as handle:
            yield handle
