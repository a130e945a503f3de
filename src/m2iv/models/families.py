"""The adapter table: the only per-family facts m2iv knows. Everything else is discovered structurally."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class TinyRecipe:
    """What makes the family's `tiny:<family>` model, as config overrides (models/tiny.py builds it generically).

    A text LLM's config is the shared tiny text config plus `text`; a VLM's is `config` with that text config
    as `text_config`, each `tokens` attribute set to the id of its special token, and the tiny bos/eos/pad ids."""

    text: dict[str, Any] = field(default_factory=dict)  # overrides on the shared tiny text config
    config: dict[str, Any] = field(default_factory=dict)  # the VLM config's own arguments (vision_config, ...)
    tokens: dict[str, str] = field(default_factory=dict)  # config attribute -> the special token whose id it holds
    image_processor: tuple[str, dict[str, Any]] | None = None  # transformers class name and its arguments
    # arguments of the family's processor_class besides image_processor, tokenizer and chat_template
    processor: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    name: str  # transformers' model_type
    kind: str  # "vlm" or "llm"
    model_class: str  # transformers class used to build / load it
    processor_class: str | None  # processor class, used by the torchvision-free fallback
    has_video_slot: bool  # processor has a video_processor slot (needs the no-video fallback)
    image_markup: str  # what one image becomes in the chat template, before processor expansion
    # per-family facts
    end_of_turn: tuple[str, ...] = ()  # chat-template tokens that end an answer (generation stops there too)
    # MTV's final head-mask draw zeroes selection probabilities <= this (the original's Idefics2-only 0.8)
    mtv_threshold: float | None = None
    tiny: TinyRecipe = field(default=TinyRecipe(), compare=False)  # how `tiny:<family>` is made


_IMG = "<image>"
_QWEN_IMG = "<|vision_start|><|image_pad|><|vision_end|>"
_IDEFICS_END = ("<end_of_utterance>",)
_SMOL_END = ("<end_of_utterance>", "<|im_end|>")  # SmolVLM's SmolLM2 base speaks ChatML
_IDEFICS3_END = ("<end_of_utterance>", "<|im_end|>", "<|eot_id|>")  # model_type of Idefics3-Llama3 and SmolVLM v1
_CHATML_END = ("<|im_end|>",)
_LLAMA3_END = ("<|eot_id|>",)
_ANY_LM_END = ("<|eot_id|>", "<|im_end|>")  # LLaVA wraps various language models

# Tiny-model building blocks shared by several recipes (vision head_dim = 16).
_VIS = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
_PATCH32 = dict(image_size=32, patch_size=8)
_PINPOINTS = [[32, 64], [64, 32], [64, 64]]
_CROP32 = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
_LLAVA_CFG = dict(vision_config=dict(_VIS, model_type="clip_vision_model", **_PATCH32), vision_feature_layer=-1,
                  vision_feature_select_strategy="default")
_LLAVA_PROC = dict(patch_size=8, num_additional_image_tokens=1, vision_feature_select_strategy="default")
_QWEN_VIS = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
                 temporal_patch_size=2)
_QWEN_TINY = TinyRecipe(
    text=dict(rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]}),
    tokens=dict(image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
                vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>"),
    image_processor=("Qwen2VLImageProcessorPil", dict(patch_size=8, merge_size=2, temporal_patch_size=2,
                                                      size={"shortest_edge": 256, "longest_edge": 4096})))
_IDEFICS3_IP = dict(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
_IDEFICS3_TINY = TinyRecipe(text=dict(model_type="llama"), tokens=dict(image_token_id="<image>"),
                            config=dict(vision_config=dict(_VIS, **_PATCH32), scale_factor=2),
                            processor=dict(image_seq_len=4))

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("idefics2", "vlm", "Idefics2ForConditionalGeneration", "Idefics2Processor", False, _IMG, _IDEFICS_END,
               mtv_threshold=0.8, tiny=TinyRecipe(
                   text=dict(model_type="mistral"), tokens=dict(image_token_id="<image>"),
                   config=dict(vision_config=dict(_VIS, **_PATCH32), perceiver_config=dict(
                       hidden_size=64, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                       resampler_head_dim=16, num_key_value_heads=1)),
                   image_processor=("Idefics2ImageProcessorPil", dict(
                       size={"shortest_edge": 32, "longest_edge": 32}, do_image_splitting=False)),
                   processor=dict(image_seq_len=4))),
        Family("idefics3", "vlm", "Idefics3ForConditionalGeneration", "Idefics3Processor", False, _IMG, _IDEFICS3_END,
               tiny=replace(_IDEFICS3_TINY, image_processor=("Idefics3ImageProcessorPil", _IDEFICS3_IP))),
        Family("smolvlm", "vlm", "SmolVLMForConditionalGeneration", "SmolVLMProcessor", True, _IMG, _SMOL_END,
               tiny=replace(_IDEFICS3_TINY, image_processor=("SmolVLMImageProcessorPil", _IDEFICS3_IP))),
        Family("qwen2_vl", "vlm", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", True, _QWEN_IMG, _CHATML_END,
               tiny=replace(_QWEN_TINY, config=dict(vision_config=_QWEN_VIS))),
        Family("qwen2_5_vl", "vlm", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", True, _QWEN_IMG,
               _CHATML_END, tiny=replace(_QWEN_TINY, config=dict(vision_config=dict(
                   _QWEN_VIS, hidden_size=32, out_hidden_size=64, intermediate_size=64, window_size=32,
                   fullatt_block_indexes=[1])))),
        Family("llava", "vlm", "LlavaForConditionalGeneration", "LlavaProcessor", False, _IMG, _ANY_LM_END,
               tiny=TinyRecipe(text=dict(model_type="llama"), config=_LLAVA_CFG,
                               tokens=dict(image_token_index="<image>"),
                               image_processor=("LlavaImageProcessorPil", _CROP32), processor=_LLAVA_PROC)),
        Family("llava_next", "vlm", "LlavaNextForConditionalGeneration", "LlavaNextProcessor", False, _IMG,
               _ANY_LM_END, tiny=TinyRecipe(
                   text=dict(model_type="llama"), config=dict(_LLAVA_CFG, image_grid_pinpoints=_PINPOINTS),
                   tokens=dict(image_token_index="<image>"), processor=_LLAVA_PROC,
                   image_processor=("LlavaNextImageProcessorPil", dict(_CROP32, image_grid_pinpoints=_PINPOINTS)))),
        Family("llava_onevision", "vlm", "LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", True,
               _IMG, _CHATML_END, tiny=TinyRecipe(
                   text=dict(model_type="qwen2"),
                   config=dict(vision_config=dict(_VIS, model_type="siglip_vision_model", **_PATCH32),
                               vision_feature_select_strategy="full", vision_feature_layer=-1,
                               image_grid_pinpoints=_PINPOINTS),
                   tokens=dict(image_token_index="<image>", video_token_index="<video>"),
                   image_processor=("LlavaOnevisionImageProcessorPil", dict(
                       size={"height": 32, "width": 32}, image_grid_pinpoints=_PINPOINTS)),
                   processor=dict(num_image_tokens=16, vision_feature_select_strategy="full"))),
        # a text LLM's tiny model is the shared tiny text config as is
        Family("llama", "llm", "LlamaForCausalLM", None, False, "", _LLAMA3_END),
        Family("qwen2", "llm", "Qwen2ForCausalLM", None, False, "", _CHATML_END),
        Family("mistral", "llm", "MistralForCausalLM", None, False, ""),
    ]
}

# Config attributes that hold the id of a placeholder token replaced by image/video features.
IMAGE_TOKEN_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")
# Tokens that wrap image features; they are text embeddings but belong to the image markup.
IMAGE_WRAPPER_TOKENS = ("<fake_token_around_image>", "<global-img>", "<|vision_start|>", "<|vision_end|>")


def end_of_turn_tokens(family: str) -> tuple[str, ...]:
    """The family's end-of-turn tokens; for a model outside the table, every family's (absent ones are skipped)."""
    if family in FAMILIES:
        return FAMILIES[family].end_of_turn
    return tuple(dict.fromkeys(t for f in FAMILIES.values() for t in f.end_of_turn))


def supported() -> str:
    return ", ".join(FAMILIES)
