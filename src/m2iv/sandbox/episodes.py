"""Interleaved image episodes in m2iv's chat-turn format, as token ids, for training and fast evaluation.

An episode is a list of turns (image_id, instruction, answer). It renders exactly like
`m2iv.data.prompts.PromptBuilder` renders demonstrations + query through the sandbox chat template:

    <|im_start|>system\\n...<|im_end|>\\n
    <|im_start|>user\\n<fake><global-img><image>x4<fake>{instruction}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>\\n
    ...
    <|im_start|>user\\n<fake><global-img><image>x4<fake>{instruction}<|im_end|>\\n<|im_start|>assistant\\n

Pieces are tokenized separately and concatenated; every piece boundary is at a special token, so this equals
tokenizing the whole text (checked by `check_rendering`). The image tokens are filled from precomputed
connector outputs, which is what `Idefics3Model.inputs_merger` does.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import torch

from m2iv.sandbox.assemble import CHAT_TEMPLATE, IMAGE_MARKUP, SYSTEM_PROMPT
from m2iv.sandbox.labels import COLOURS, SHAPES

# -- evaluation tasks: fixed mappings whose label words never occur in training -----------------------
EVAL_INSTRUCTION = "Which word goes with this picture?"
EVAL_TASKS: dict[str, tuple[str, dict[str, str]]] = {
    "colour_nonce": ("colour", dict(zip(COLOURS, ["dax", "wug", "blick", "fep", "toma", "zorp", "kiki", "lune"],
                                        strict=True))),
    "shape_nonce": ("shape", dict(zip(SHAPES, ["dax", "wug", "blick"], strict=True))),
    "colour_french": ("colour", dict(zip(COLOURS, ["rouge", "vert", "bleu", "noir", "gris", "sarcelle", "marron",
                                                   "jaune"], strict=True))),
    "shape_adjective": ("shape", dict(zip(SHAPES, ["round", "boxy", "pointy"], strict=True))),
    "colour_number": ("colour", dict(zip(COLOURS, ["1", "2", "3", "4", "5", "6", "7", "8"], strict=True))),
}
RESERVED_WORDS = {w for _, m in EVAL_TASKS.values() for w in m.values()} | {
    "mip", "vor", "tasp", "glorp", "snib", "tove", "rouge", "vert", "bleu", "noir", "gris", "blanc", "rose",
    "jaune", "orange", "violet", "marron", "cercle", "carre", "triangle", "rond", "carré"}

# -- training-only instructions and words ------------------------------------------------------------
TRAIN_INSTRUCTIONS = {
    "colour": ["What color is the shape?", "What is the color of the shape?", "Color?", "Name the color."],
    "shape": ["What shape is in the image?", "What shape is this?", "Shape?", "Name the shape."],
    "generic": ["", "What is this?", "Label the image.", "Answer with one word.", "Which label fits?",
                "Give the label.", "Classify the image.", "What word describes this image?", "Label:",
                "Name it."],
}
DESCRIBE_INSTRUCTIONS = ["Describe the image.", "Describe the image briefly.", "What is in the image?",
                         "What do you see?"]


@functools.lru_cache(maxsize=1)
def training_words(n: int = 400, seed: int = 1234) -> tuple[str, ...]:
    """Invented words (1-3 syllables) used only as training labels; disjoint from every evaluation word."""
    rng = random.Random(seed)
    cons, vow = "bcdfghjklmnprstvwz", "aeiou"
    out: list[str] = []
    seen = set(RESERVED_WORDS) | set(COLOURS) | set(SHAPES)
    while len(out) < n:
        w = "".join(rng.choice(cons) + rng.choice(vow) + (rng.choice(cons) if rng.random() < 0.4 else "")
                    for _ in range(rng.choice([1, 2, 2, 3])))
        if len(w) >= 3 and w not in seen:
            seen.add(w)
            out.append(w)
    return tuple(out)


def caption(colour: str, shape: str) -> str:
    return f"A {colour} {shape}."


def target_words(colour: str, shape: str) -> str:
    """The text the 4 image tokens of an image are aligned to."""
    return f" {colour} {shape}." if colour == "teal" else f" a {colour} {shape}."


# -- rendering --------------------------------------------------------------------------------------
@dataclass
class Turn:
    image: int  # index into the feature table
    instruction: str
    answer: str
    train: bool = True  # loss on this answer


class Renderer:
    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.image_id = tokenizer.convert_tokens_to_ids("<image>")
        self.sys = self.enc(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n")
        self.user = self.enc("<|im_start|>user\n")
        self.img = self.enc(IMAGE_MARKUP)
        self.end = self.enc("<|im_end|>\n")
        assert self.img.count(self.image_id) == IMAGE_MARKUP.count("<image>")

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one renderer per run
    def enc_cached(self, text: str) -> tuple[int, ...]:
        return tuple(self.tok.encode(text, add_special_tokens=False))

    def enc(self, text: str) -> list[int]:
        return list(self.enc_cached(text))

    def render(self, turns: list[Turn], query: Turn | None = None):
        """(ids, image order, label positions, label ids): labels are the answer tokens + <|im_end|>."""
        ids = list(self.sys)
        images: list[int] = []
        lab_pos: list[int] = []
        lab_ids: list[int] = []
        for t in turns + ([query] if query is not None else []):
            ids += self.user + self.img + self.enc(t.instruction + "<|im_end|>\n<|im_start|>assistant\n")
            images.append(t.image)
            if t is query:
                break
            ans = self.enc(t.answer) + self.end[:1]
            if t.train:
                lab_pos += list(range(len(ids) - 1, len(ids) - 1 + len(ans)))
                lab_ids += ans
            ids += ans + self.end[1:]
        return ids, images, lab_pos, lab_ids

    def text(self, turns: list[Turn], query: Turn | None = None) -> str:
        msgs = []
        for t in turns:
            msgs += [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t.instruction}]},
                     {"role": "assistant", "content": [{"type": "text", "text": t.answer}]}]
        if query is not None:
            msgs.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query.instruction}]})
        return self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=query is not None,
                                            chat_template=CHAT_TEMPLATE)

    def check_rendering(self, turns: list[Turn], query: Turn | None = None) -> None:
        ids = self.render(turns, query)[0]
        whole = self.tok.encode(self.text(turns, query).replace("<image>", IMAGE_MARKUP), add_special_tokens=False)
        assert ids == whole, "episode rendering differs from the chat template's tokenization"

    def first_token(self, word: str) -> int:
        return self.enc(word)[0]


def collate(batch, pad_id: int):
    """Right-padded (ids, mask, image positions order) for a list of `render` outputs."""
    L = max(len(b[0]) for b in batch)
    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), L), dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b[0])] = torch.tensor(b[0])
        mask[i, : len(b[0])] = 1
    return ids, mask


def embed(text_model, ids: torch.Tensor, images: list[list[int]], feats: torch.Tensor, image_id: int):
    """Token embeddings with the image positions filled row by row from `feats[image]` (n_tokens, H)."""
    emb = text_model.embed_tokens(ids)
    pos = ids == image_id
    if pos.any():
        fill = torch.cat([feats[torch.tensor(imgs, dtype=torch.long)].reshape(-1, feats.shape[-1])
                          for imgs in images if imgs]).to(emb.dtype)
        emb = emb.masked_scatter(pos.unsqueeze(-1), fill)
    return emb
