"""`m2iv demo`: the main job. Until the sandbox LVLM and M²IV training land, it says so plainly and
runs the parts that exist (injection engine and vector format) on a tiny model, reporting real checks."""

from __future__ import annotations

import argparse
import tempfile
import time


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the sandbox model",
                       epilog="example: m2iv demo", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny:idefics3", help="model for the engine check (default tiny:idefics3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from m2iv.models.loading import load_model
    from m2iv.vectors import InContextVectors, apply, load_vectors, save_vectors

    print("m2iv demo: the sandbox LVLM (real SmolLM2 weights) and M²IV training are not in this version yet,\n"
          "so no accuracy table is printed. Checking what exists on a tiny random model instead:\n")
    t0 = time.perf_counter()
    lm = load_model(args.model)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    text = lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                            chat_template=getattr(lm.processor, "chat_template", None))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    inputs = lm.processor(text=[text], images=[[image]], return_tensors="pt") if lm.is_vlm else \
        lm.processor([text], return_tensors="pt")
    with torch.no_grad():
        base = lm.model(**inputs).logits
        vectors = InContextVectors.for_model(lm.adapter)
        with apply(lm.model, vectors, lm.adapter):
            same = torch.equal(lm.model(**inputs).logits, base)
        torch.manual_seed(0)
        for p in vectors.parameters():
            p.normal_(0, 0.5)
        with apply(lm.model, vectors, lm.adapter):
            steered = lm.model(**inputs).logits
        restored = torch.equal(lm.model(**inputs).logits, base)
    with tempfile.TemporaryDirectory() as d:
        save_vectors(vectors, f"{d}/v", adapter=lm.adapter, base_model=args.model)
        loaded, _ = load_vectors(f"{d}/v", adapter=lm.adapter)
        exact = all(torch.equal(a, b) for a, b in zip(vectors.parameters(), loaded.parameters()))
    a = lm.adapter
    print(f"  model            {args.model}: {a.num_layers} decoder layers at {a.layers_path}, hidden {a.hidden_size}")
    print(f"  zero vectors     logits identical to the plain model: {same}")
    print(f"  random vectors   max |Δlogit| = {(steered - base).abs().max().item():.3f}")
    print(f"  after removal    logits identical again: {restored}")
    print(f"  save/load        round trip exact: {exact} ({vectors.num_parameters()} parameters)")
    print(f"\ndone in {time.perf_counter() - t0:.1f}s")
    return 0 if (same and restored and exact) else 1
