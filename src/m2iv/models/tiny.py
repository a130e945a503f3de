"""Seeded tiny random models of every supported family, built in code with an offline tokenizer,
PIL image processor and chat template. Tests and the `tiny:<family>` model spec use these builders.

    model, processor = build_tiny("qwen2_vl", seed=0)
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch

from m2iv.errors import M2IVError
from m2iv.models.families import FAMILIES, supported

# Text and vision sizes shared by every tiny family (head_dim = 16).
TXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=512)
VIS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
VOCAB = 448

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|endoftext|>", "<image>", "<video>", "<fake_token_around_image>",
            "<global-img>", "<end_of_utterance>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]

_CORPUS = [
    "What color is the shape? The shape is red. What shape is in the image? It is a circle.",
    "Is there a blue triangle? yes no. Answer the question using a single word or phrase.",
    "user assistant system Question: Answer: Describe the image. A green rectangle on a white background.",
    "one two three four five six seven eight nine ten zero. gray black yellow teal brown purple orange.",
    "The quick brown fox jumps over the lazy dog. How many objects are there? There are 3 objects.",
    "0 1 2 3 4 5 6 7 8 9 dax wug blick fep toma zorp kiki lune. a an the is are of in on to and",
]

# The chat template: image parts become the family's image markup, wrapped in <|im_start|> turns.
_CHAT = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}IMAGE_MARKUP"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 16, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return tok.to_str()


def tiny_tokenizer(family: str = "llama"):
    """A byte-level BPE tokenizer (never produces <unk>) with every family's special tokens."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()), unk_token="<unk>",
                                  bos_token="<s>", eos_token="<|im_end|>", pad_token="<pad>")
    tok.padding_side = "left"
    markup = FAMILIES[family].image_markup if family in FAMILIES else ""
    tok.chat_template = _CHAT.replace("IMAGE_MARKUP", markup)
    assert len(tok) <= VOCAB
    return tok


def no_video(processor_cls: Any) -> Any:
    """Processor subclass without the video slot: transformers 5 refuses to build those processors
    without torchvision, although images never need it."""

    class _NoVideo(processor_cls):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
            processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kw)

    # ProcessorMixin saves the attributes named in the __init__ signature: keep the parent's, minus video.
    sig = inspect.signature(processor_cls.__init__)
    _NoVideo.__init__.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[p for n, p in sig.parameters.items() if n != "video_processor"])
    _NoVideo.__name__ = processor_cls.__name__
    _NoVideo.__qualname__ = processor_cls.__qualname__
    return _NoVideo


def _ids(tok, *names: str) -> list[int]:
    return [tok.convert_tokens_to_ids(n) for n in names]


def build_tiny(family: str, seed: int = 0):
    """Return (model, processor) for a tiny random `family`; the processor is a tokenizer for text LLMs."""
    import transformers as T

    if family not in FAMILIES:
        raise M2IVError(f"no tiny builder for family {family!r}; supported: {supported()}")
    tok = tiny_tokenizer(family)
    chat = tok.chat_template
    image, video, fake, vstart, vend, impad, vidpad = _ids(
        tok, "<image>", "<video>", "<fake_token_around_image>", "<|vision_start|>", "<|vision_end|>",
        "<|image_pad|>", "<|video_pad|>")
    special: dict[str, Any] = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id)
    text: dict[str, Any] = dict(TXT, vocab_size=VOCAB, **special)
    cfg: Any  # the family's config, image processor and processor classes differ per branch
    ip: Any
    proc: Any
    pcls: Any
    clip_vis = dict(VIS, model_type="clip_vision_model", image_size=32, patch_size=8)
    pinpoints = [[32, 64], [64, 32], [64, 64]]
    torch.manual_seed(seed)

    if family in ("llama", "qwen2", "mistral"):
        cfg_cls = {"llama": T.LlamaConfig, "qwen2": T.Qwen2Config, "mistral": T.MistralConfig}[family]
        model = getattr(T, FAMILIES[family].model_class)(cfg_cls(**text))
        return model.eval(), tok

    if family == "llava":
        cfg = T.LlavaConfig(vision_config=clip_vis, text_config=dict(text, model_type="llama"),
                            image_token_index=image, vision_feature_layer=-1,
                            vision_feature_select_strategy="default", **special)
        ip = T.LlavaImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        proc = T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                                vision_feature_select_strategy="default", chat_template=chat)
    elif family == "llava_next":
        cfg = T.LlavaNextConfig(vision_config=clip_vis, text_config=dict(text, model_type="llama"),
                                image_token_index=image, vision_feature_layer=-1,
                                vision_feature_select_strategy="default", image_grid_pinpoints=pinpoints, **special)
        ip = T.LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                          image_grid_pinpoints=pinpoints)
        proc = T.LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8, num_additional_image_tokens=1,
                                    vision_feature_select_strategy="default", chat_template=chat)
    elif family == "llava_onevision":
        cfg = T.LlavaOnevisionConfig(
            vision_config=dict(VIS, model_type="siglip_vision_model", image_size=32, patch_size=8),
            text_config=dict(text, model_type="qwen2"), image_token_index=image, video_token_index=video,
            vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints,
            **special)
        ip = T.LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
        proc = no_video(T.LlavaOnevisionProcessor)(image_processor=ip, tokenizer=tok, chat_template=chat,
                                                   num_image_tokens=16, vision_feature_select_strategy="full")
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        tcfg: dict[str, Any] = dict(text, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]})
        vcfg: dict[str, Any] = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=8,
                                    spatial_merge_size=2, temporal_patch_size=2)
        ids: dict[str, Any] = dict(image_token_id=impad, video_token_id=vidpad, vision_start_token_id=vstart,
                                   vision_end_token_id=vend)
        if family == "qwen2_vl":
            cfg = T.Qwen2VLConfig(text_config=tcfg, vision_config=vcfg, **ids, **special)
            pcls = T.Qwen2VLProcessor
        else:
            vcfg = dict(vcfg, hidden_size=32, out_hidden_size=64, intermediate_size=64, window_size=32,
                        fullatt_block_indexes=[1])
            cfg = T.Qwen2_5_VLConfig(text_config=tcfg, vision_config=vcfg, **ids, **special)
            pcls = T.Qwen2_5_VLProcessor
        ip = T.Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                        size={"shortest_edge": 256, "longest_edge": 4096})
        proc = no_video(pcls)(image_processor=ip, tokenizer=tok, chat_template=chat)
    elif family == "idefics2":
        cfg = T.Idefics2Config(
            vision_config=dict(VIS, image_size=32, patch_size=8),
            perceiver_config=dict(hidden_size=64, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                                  resampler_head_dim=16, num_key_value_heads=1),
            text_config=dict(text, model_type="mistral"), image_token_id=image, **special)
        ip = T.Idefics2ImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 32}, do_image_splitting=False)
        proc = T.Idefics2Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=chat)
    elif family in ("idefics3", "smolvlm"):
        vis = dict(VIS, image_size=32, patch_size=8)
        ip_kw: dict[str, Any] = dict(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                     do_image_splitting=True)
        if family == "idefics3":
            cfg = T.Idefics3Config(vision_config=vis, text_config=dict(text, model_type="llama"), scale_factor=2,
                                   image_token_id=image, **special)
            proc = T.Idefics3Processor(image_processor=T.Idefics3ImageProcessorPil(**ip_kw), tokenizer=tok,
                                       image_seq_len=4, chat_template=chat)
        else:
            cfg = T.SmolVLMConfig(vision_config=vis, text_config=dict(text, model_type="llama"), scale_factor=2,
                                  image_token_id=image, **special)
            proc = no_video(T.SmolVLMProcessor)(image_processor=T.SmolVLMImageProcessorPil(**ip_kw),
                                                tokenizer=tok, image_seq_len=4, chat_template=chat)
    else:  # pragma: no cover - FAMILIES and this function are kept in step by tests
        raise M2IVError(f"no tiny builder for family {family!r}")
    model = getattr(T, FAMILIES[family].model_class)(cfg)
    return model.eval(), proc
