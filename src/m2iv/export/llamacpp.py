"""Run a control vector in llama.cpp from Python, through llama-cpp-python (an optional dependency).

llama-cpp-python binds `llama_set_adapter_cvec` but not llama.cpp's file loader (common/common.cpp), so this is that
loader: direction.k (k >= 1) goes to floats [(k-1)*n_embd, k*n_embd) of the buffer, times the strength (what
`--control-vector-scaled FILE S` does), and layers 1..n_layer are switched on, as llama-cli's defaults are.

    from llama_cpp import Llama
    llm = Llama(model_path="SmolLM2-135M-Instruct.Q4_1.gguf", logits_all=True)
    apply_control_vector(llm, read_control_vector("steer.gguf"))
    logprobs = next_token_logprobs(llm, llm.tokenize(b"The capital of France is"))
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

from m2iv.errors import M2IVError
from m2iv.export.gguf_file import ControlVectorFile


def cvec_buffer(cv: ControlVectorFile, n_embd: int, n_layer: int, strength: float = 1.0) -> np.ndarray:
    """The float buffer llama.cpp's loader builds from `cv`: layer k >= 1 at offset (k-1)*n_embd, (n_layer-1)*n_embd
    floats in all (layer 0 has no slot; llama.cpp refuses direction.0)."""
    if 0 in cv.directions:
        raise M2IVError("llama.cpp rejects direction.0 (it never steers layer 0's output); export without layer 0")
    sizes = {d.shape[0] for d in cv.directions.values()}
    if sizes != {n_embd}:
        raise M2IVError(f"the control vector has {sorted(sizes)} values per direction but the model's n_embd is "
                        f"{n_embd}")
    if max(cv.directions) >= n_layer:
        raise M2IVError(f"the control vector steers layer {max(cv.directions)} but the model has {n_layer} layers")
    data = np.zeros((n_layer - 1) * n_embd, dtype=np.float32)
    for k, d in cv.directions.items():
        data[(k - 1) * n_embd: k * n_embd] += np.float32(strength) * d
    return data


def apply_control_vector(llm: Any, cv: ControlVectorFile, strength: float = 1.0) -> None:
    """Steer the llama_cpp.Llama `llm` with `cv` (replacing any control vector it had)."""
    import llama_cpp

    n_embd, n_layer = llm.n_embd(), llama_cpp.llama_model_n_layer(llm.model)
    data = cvec_buffer(cv, n_embd, n_layer, strength)
    buf = (ctypes.c_float * len(data)).from_buffer_copy(data.tobytes())
    if llama_cpp.llama_set_adapter_cvec(llm.ctx, buf, len(data), n_embd, 1, n_layer) != 0:
        raise M2IVError("llama.cpp refused the control vector (llama_set_adapter_cvec failed)")
    llm.reset()  # the KV cache holds states computed without it


def clear_control_vector(llm: Any) -> None:
    import llama_cpp

    llama_cpp.llama_set_adapter_cvec(llm.ctx, None, 0, llm.n_embd(), -1, -1)
    llm.reset()


def next_token_logprobs(llm: Any, ids: Sequence[int]) -> np.ndarray:
    """log p(next token | ids) from llama.cpp, float64 (V,); `llm` needs logits_all=True."""
    llm.reset()
    llm.eval(list(ids))
    logits = np.asarray(llm.scores[len(ids) - 1], dtype=np.float64)
    logits -= logits.max()
    return logits - np.log(np.exp(logits).sum())
