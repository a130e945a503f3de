"""Vectors that leave m2iv: folded into a plain Hugging Face checkpoint (`merge`), or written as a llama.cpp
control vector and read back from one (`gguf_file`, `control_vector`). See docs/export.md.

    fold.py            which vectors fold into weights, and the fold itself (o_proj / down_proj weight and bias)
    merge.py           a save_pretrained directory of a model with its vectors folded in
    gguf_file.py       the GGUF control-vector file: `direction.{layer}` F32 tensors + `controlvector.*` metadata
    control_vector.py  vectors <-> per-layer residual shifts (exact for additive layer vectors, else approximated)
"""
