"""Train the sandbox's own weights from scratch (seeded, CPU): `m2iv sandbox build --from-scratch` runs
`run()`, which writes `weights.safetensors`, its manifest, `training_curve.json` and `model_card.json` into
`out_dir`. About an hour on 2 cores.

Stages, one module each:
  1. vision (vision.py): the ViT pretrained as a colour / shape classifier.
  2. align (align.py): ViT + connector put the 4 image tokens on the words describing the image.
  3. meta (meta.py): LoRA on the LM, meta-trained for in-context learning on interleaved episodes.
  4. export (export.py) + final evaluation of the assembled checkpoint through the normal HF path.
Intermediate states go to a private work folder (state.py: safetensors + JSON) so a stage can be rerun
alone (`--stages meta,export`).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from m2iv.sandbox import assemble as A
from m2iv.sandbox import episodes as E
from m2iv.sandbox.recipe.align import align_targets, image_features, stage_align
from m2iv.sandbox.recipe.data import label_table, load_pixels
from m2iv.sandbox.recipe.eval import eval_describe_hf, eval_icl_fast, eval_icl_hf
from m2iv.sandbox.recipe.export import export, model_card, round_fp16_
from m2iv.sandbox.recipe.meta import LORA_FILE, Sampler, stage_meta, unpack_lora
from m2iv.sandbox.recipe.optim import log
from m2iv.sandbox.recipe.state import load_state, private_dir, read_json, save_state, write_json
from m2iv.sandbox.recipe.vision import make_heads, stage_vision

VISION_FILE, ALIGNED_FILE = "vision.safetensors", "aligned.safetensors"


def run(cfg: dict, out_dir: Path, work: Path, stages: list[str]) -> None:
    """The stages named in `stages`, in order; each later one reads the states earlier ones left in `work`."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    work = private_dir(work)
    curve_path = work / "training_curve.json"
    curve = read_json(curve_path, []) if "vision" not in stages else []
    times = read_json(work / "times.json", {})

    log("loading SmolLM2 and building the base model")
    smol = A.load_smollm2(log)
    model, proc = A.build_base(log, seed=cfg["seed"], smollm2=smol)
    for p in model.parameters():
        p.requires_grad_(False)
    px = load_pixels()
    col, shp = label_table()
    if "vision" in stages:
        _vision(model, px, col, shp, cfg, curve, work, times)
    if "align" in stages:
        _align(model, proc.tokenizer, px, col, shp, cfg, curve, work, times)
    feats, renderer = _aligned(model, proc.tokenizer, px, work)
    if "meta" in stages:
        _meta(model, renderer, feats, cfg, curve, work, times, stages)
    write_json(curve_path, curve)
    write_json(work / "times.json", times)

    if "export" in stages:
        model.float()
        lora_state = unpack_lora(load_state(work / LORA_FILE)["lora"])
        meta = {"lora_rank": cfg["lora_rank"], "image_seq_len": A.IMAGE_SEQ_LEN, "config": cfg}
        info = export(model, lora_state, out_dir, meta)
        log(f"wrote {info['file']} ({info['bytes'] / 1e6:.1f} MB)")
        write_json(out_dir / "training_curve.json", curve)
        del model, feats
        del smol
        final_eval(cfg, out_dir, work, times, info)


def _vision(model, px, col, shp, cfg: dict, curve: list, work: Path, times: dict) -> None:
    """Stage 1: the ViT and its classifier heads, saved to VISION_FILE."""
    vis = model.model.vision_model
    t = time.time()
    for p in vis.parameters():
        p.requires_grad_(True)
    heads = stage_vision(model, px, col, shp, cfg, curve)
    times["vision"] = round(time.time() - t, 1)
    save_state(work / VISION_FILE, {"vision": vis.state_dict(), "heads": heads.state_dict()})


def _align(model, tok, px, col, shp, cfg: dict, curve: list, work: Path, times: dict) -> None:
    """Stage 2: ViT + connector from the vision stage (or a previous align stage with align_resume), saved to
    ALIGNED_FILE."""
    vis, conn = model.model.vision_model, model.model.connector
    st = load_state(work / VISION_FILE)
    vis.load_state_dict(st["vision"])
    heads = make_heads(model)
    heads.load_state_dict(st["heads"])
    if cfg["align_resume"] and (work / ALIGNED_FILE).is_file():  # continue a previous align stage
        prev = load_state(work / ALIGNED_FILE)
        vis.load_state_dict(prev["vision"])
        conn.load_state_dict(prev["connector"])
        heads.load_state_dict(prev["heads"])
    t = time.time()
    for p in list(vis.parameters()) + list(conn.parameters()):
        p.requires_grad_(True)
    stage_align(model, heads, px, col, shp, align_targets(tok, col, shp), cfg, curve)
    times["align"] = round(time.time() - t, 1) + (times.get("align", 0) if cfg["align_resume"] else 0)
    for p in model.parameters():
        p.requires_grad_(False)
    save_state(work / ALIGNED_FILE, {"vision": vis.state_dict(), "heads": heads.state_dict(),
                                     "connector": conn.state_dict()})


def _aligned(model, tok, px, work: Path):
    """(image features, episode renderer) of the aligned vision side, rounded to fp16 as it ships; the renderer's
    episodes are checked to round-trip."""
    vis, conn = model.model.vision_model, model.model.connector
    st = load_state(work / ALIGNED_FILE)
    vis.load_state_dict(st["vision"])
    conn.load_state_dict(st["connector"])
    round_fp16_(vis)
    round_fp16_(conn)
    feats = image_features(model, px)
    renderer = E.Renderer(tok)
    samp = Sampler(renderer, 0)
    for _ in range(5):
        ep = samp.episode()
        renderer.check_rendering(ep[:-1], E.Turn(ep[-1].image, ep[-1].instruction, ""))
        renderer.check_rendering(ep)
    return feats, renderer


def _meta(model, renderer, feats, cfg: dict, curve: list, work: Path, times: dict, stages: list[str]) -> None:
    """Stage 3: the LM's LoRA meta-trained for in-context learning, with ICL measured before and after."""
    tasks = list(E.EVAL_TASKS)
    model.model.text_model.to(torch.bfloat16)
    model.lm_head.to(torch.bfloat16)
    if "baseline" in stages or not (work / "baseline.json").is_file():
        log("baseline ICL (before meta-training)")
        base = eval_icl_fast(model, renderer, feats, tasks, n=cfg["eval_n"])
        write_json(work / "baseline.json", base)
        curve.append({"stage": "meta", "step": 0, **base})
        log(str(base))
    t = time.time()
    stage_meta(model, renderer, feats, cfg, curve, work)
    times["meta"] = round(time.time() - t, 1)
    log("ICL after meta-training (fast path)")
    after = eval_icl_fast(model, renderer, feats, tasks, n=cfg["eval_n"])
    write_json(work / "after_fast.json", after)
    curve.append({"stage": "meta", "step": cfg["meta_steps"], "final_fast": True, **after})
    log(str(after))


def final_eval(cfg, out_dir: Path, work: Path, times: dict, info: dict) -> None:
    """Assemble the exported weights and measure the checkpoint exactly as users will load it."""
    from m2iv.models.loading import load_model

    target = work / "assembled"
    t = time.time()
    A.assemble(target, out_dir / A.WEIGHTS.name, out_dir / A.MANIFEST.name, progress=log)
    build_s = round(time.time() - t, 1)
    lm = load_model(str(target), dtype="bfloat16")
    log("final describe evaluation (assembled checkpoint, bf16)")
    desc = eval_describe_hf(lm.model, lm.processor, n=cfg["describe_n"] or None)
    log(str({k: v for k, v in desc.items() if k != "examples"}))
    log("final ICL evaluation (assembled checkpoint via PromptBuilder, bf16)")
    icl = eval_icl_hf(lm, list(E.EVAL_TASKS), n=cfg["eval_n"])
    log(str(icl))
    base = read_json(work / "baseline.json", {})
    fast = read_json(work / "after_fast.json", {})
    card = model_card(cfg, info, times, desc, icl, base, fast, build_s)
    write_json(out_dir / "model_card.json", card)
    log(f"model card written: {out_dir / 'model_card.json'}")
