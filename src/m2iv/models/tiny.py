"""Seeded tiny random models of every supported family, built in code with an offline tokenizer,
PIL image processor and chat template. Tests and the `tiny:<family>` model spec use these builders.

    model, processor = build_tiny("qwen2_vl", seed=0)
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any

import torch

from m2iv.errors import M2IVError
from m2iv.models.families import FAMILIES, Family, supported

# Text sizes shared by every tiny family (head_dim = 16); each family's own recipe is on its row in families.py.
TXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=512)
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


def _special_ids(tok) -> dict[str, Any]:
    return dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _tiny_config(family: Family, tok) -> Any:
    """The family's tiny config: its recipe's overrides on the shared tiny text config (see TinyRecipe)."""
    import transformers as T

    recipe = copy.deepcopy(family.tiny)  # configs may fill in the dicts they are given: keep the table intact
    text: dict[str, Any] = dict(TXT, vocab_size=VOCAB, **_special_ids(tok), **recipe.text)
    if family.kind == "llm":
        return T.AutoConfig.for_model(family.name, **text)
    token_ids = {attr: tok.convert_tokens_to_ids(token) for attr, token in recipe.tokens.items()}
    return T.AutoConfig.for_model(family.name, text_config=text, **recipe.config, **token_ids, **_special_ids(tok))


def _tiny_processor(family: Family, tok) -> Any:
    """The family's processor around `tok`, with the recipe's image processor (a VLM's; an LLM's is `tok`)."""
    import transformers as T

    if family.kind == "llm":
        return tok
    recipe = copy.deepcopy(family.tiny)
    if recipe.image_processor is None or family.processor_class is None:
        raise M2IVError(f"family {family.name!r} has no tiny image processor in its TinyRecipe (models/families.py); "
                        "add one to its row")
    ip_name, ip_kw = recipe.image_processor
    cls = getattr(T, family.processor_class)
    cls = no_video(cls) if family.has_video_slot else cls
    return cls(image_processor=getattr(T, ip_name)(**ip_kw), tokenizer=tok, chat_template=tok.chat_template,
               **recipe.processor)


def build_tiny(family: str, seed: int = 0):
    """Return (model, processor) for a tiny random `family`; the processor is a tokenizer for text LLMs.
    Every family is built from its row's TinyRecipe: a new family needs no code here."""
    import transformers as T

    if family not in FAMILIES:
        raise M2IVError(f"no tiny builder for family {family!r}; supported: {supported()}")
    fam = FAMILIES[family]
    tok = tiny_tokenizer(family)
    torch.manual_seed(seed)
    processor = _tiny_processor(fam, tok)
    model = getattr(T, fam.model_class)(_tiny_config(fam, tok))
    return model.eval(), processor
