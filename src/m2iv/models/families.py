"""The adapter table: the only per-family facts m2iv knows. Everything else is discovered structurally."""

from __future__ import annotations

from dataclasses import dataclass


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


_IMG = "<image>"
_QWEN_IMG = "<|vision_start|><|image_pad|><|vision_end|>"
_IDEFICS_END = ("<end_of_utterance>",)
_SMOL_END = ("<end_of_utterance>", "<|im_end|>")  # SmolVLM's SmolLM2 base speaks ChatML
_IDEFICS3_END = ("<end_of_utterance>", "<|im_end|>", "<|eot_id|>")  # model_type of Idefics3-Llama3 and SmolVLM v1
_CHATML_END = ("<|im_end|>",)
_LLAMA3_END = ("<|eot_id|>",)
_ANY_LM_END = ("<|eot_id|>", "<|im_end|>")  # LLaVA wraps various language models

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("idefics2", "vlm", "Idefics2ForConditionalGeneration", "Idefics2Processor", False, _IMG, _IDEFICS_END,
               mtv_threshold=0.8),
        Family("idefics3", "vlm", "Idefics3ForConditionalGeneration", "Idefics3Processor", False, _IMG, _IDEFICS3_END),
        Family("smolvlm", "vlm", "SmolVLMForConditionalGeneration", "SmolVLMProcessor", True, _IMG, _SMOL_END),
        Family("qwen2_vl", "vlm", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", True, _QWEN_IMG, _CHATML_END),
        Family("qwen2_5_vl", "vlm", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", True, _QWEN_IMG,
               _CHATML_END),
        Family("llava", "vlm", "LlavaForConditionalGeneration", "LlavaProcessor", False, _IMG, _ANY_LM_END),
        Family("llava_next", "vlm", "LlavaNextForConditionalGeneration", "LlavaNextProcessor", False, _IMG,
               _ANY_LM_END),
        Family("llava_onevision", "vlm", "LlavaOnevisionForConditionalGeneration", "LlavaOnevisionProcessor", True,
               _IMG, _CHATML_END),
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
