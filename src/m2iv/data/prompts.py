"""Interleaved image+text prompts: N demonstrations then the query, through the model's chat template.

The same builder makes the N-shot teacher prompt and the zero-shot student prompt (N = 0), so the
query part is token-for-token the same in both. Each demonstration is a user turn (its images, then
the instruction filled with its question) and an assistant turn (its answer); the query is a user
turn followed by the generation prompt. A checkpoint without a chat template gets a plain fallback
("<images>question\\nAnswer: answer\\n"), with the family's image markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from m2iv.data.images import open_image
from m2iv.data.sample import Sample
from m2iv.errors import M2IVError
from m2iv.models.families import FAMILIES


@dataclass
class Prompt:
    text: str
    image_paths: list[str]
    prefix_text: str  # everything before the query turn (demonstrations, system prompt)
    prefix_image_paths: list[str] = field(default_factory=list)
    answer: str | None = None  # appended for teacher forcing; the answer's tokens are the labels


class PromptBuilder:
    def __init__(self, lm, instruction: str = "{question}", answer_template: str = "{answer}") -> None:
        self.lm = lm
        self.instruction = instruction
        self.answer_template = answer_template
        proc = lm.processor
        self.chat_template = getattr(proc, "chat_template", None) or getattr(lm.tokenizer, "chat_template", None)
        fam = FAMILIES.get(lm.family)
        self.image_markup = fam.image_markup if fam else "<image>"
        self.end_of_turn = self._end_of_turn()

    def _end_of_turn(self) -> str:
        """What the template writes after an assistant answer (e.g. `<|im_end|>`): appended to training
        answers so a model steered by vectors also learns to stop."""
        sentinel = "XQZANSWERXQZ"
        text = self._render([{"role": "user", "content": [{"type": "text", "text": "q"}]},
                             self._assistant(sentinel)], generation_prompt=False)
        tail = text.split(sentinel, 1)[1] if sentinel in text else ""
        return tail.strip() if tail.strip() else ""

    # -- text -------------------------------------------------------------------------------------
    def _user(self, s: Sample) -> dict:
        text = self.instruction.format(question=s.question)
        content = [{"type": "image"} for _ in s.images] if self.lm.is_vlm else []
        if not self.lm.is_vlm and s.images:
            raise M2IVError(f"sample {s.id} has images but {self.lm.spec} is a text-only model")
        return {"role": "user", "content": content + [{"type": "text", "text": text}]}

    def _assistant(self, answer: str) -> dict:
        return {"role": "assistant", "content": [{"type": "text", "text": answer}]}

    def _render(self, messages: list[dict], generation_prompt: bool) -> str:
        if not messages:
            return ""
        if self.chat_template:
            msgs = messages if self.lm.is_vlm else [
                {"role": m["role"], "content": "".join(p.get("text", "") for p in m["content"])} for m in messages]
            return self.lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt,
                                                         chat_template=self.chat_template)
        out = []
        for m in messages:
            if m["role"] == "user":
                imgs = sum(p["type"] == "image" for p in m["content"])
                out.append(self.image_markup * imgs + "".join(p.get("text", "") for p in m["content"]))
            else:
                out.append(f"\nAnswer: {m['content'][0]['text']}\n")
        if generation_prompt:
            out.append("\nAnswer:")
        return "".join(out)

    def demo_answer(self, s: Sample) -> str:
        return self.answer_template.format(answer=s.answers[0] if s.answers else "")

    def target(self, s: Sample) -> str:
        """The training answer of a query: its most frequent reference, then the end-of-turn marker."""
        from collections import Counter

        best = Counter(s.answers).most_common(1)[0][0] if s.answers else ""
        return self.answer_template.format(answer=best) + self.end_of_turn

    def build(self, demos: list[Sample], query: Sample, answer: str | None = None) -> Prompt:
        messages: list[dict] = []
        for d in demos:
            messages += [self._user(d), self._assistant(self.demo_answer(d))]
        prefix = self._render(messages, generation_prompt=False)
        text = self._render(messages + [self._user(query)], generation_prompt=True)
        if not text.startswith(prefix):
            raise M2IVError("the chat template does not render demonstrations as a prefix of the prompt; "
                            "the query position cannot be found")
        if answer is not None:
            text += answer
        images = [p for d in demos for p in d.images] + list(query.images)
        return Prompt(text=text, image_paths=images, prefix_text=prefix,
                      prefix_image_paths=[p for d in demos for p in d.images], answer=answer)

    # -- tokens -----------------------------------------------------------------------------------
    def _encode_texts(self, texts: list[str], image_lists: list[list[str]]) -> dict:
        tok = self.lm.tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if self.lm.is_vlm and any(image_lists):
            images = [[open_image(p) for p in paths] for paths in image_lists]
            return dict(self.lm.processor(text=texts, images=images, return_tensors="pt", padding=True))
        return dict(tok(texts, return_tensors="pt", padding=True, add_special_tokens=False))

    def encode(self, prompts: list[Prompt]) -> dict:
        """Left-padded batch; adds `query_start` (B,) and, with answers, `labels` on the answer tokens only."""
        batch = self._encode_texts([p.text for p in prompts], [p.image_paths for p in prompts])
        ids = batch["input_ids"]
        pad = (batch["attention_mask"] == 0).sum(dim=1)  # left padding per row
        prefix_lens = [self.num_tokens(p.prefix_text, p.prefix_image_paths) for p in prompts]
        batch["query_start"] = pad + torch.tensor(prefix_lens)
        if any(p.answer is not None for p in prompts):
            labels = torch.full_like(ids, -100)
            for i, p in enumerate(prompts):
                if p.answer:
                    n = self.num_tokens(p.text, p.image_paths) - self.num_tokens(p.text[: -len(p.answer)],
                                                                                   p.image_paths)
                    labels[i, ids.shape[1] - n:] = ids[i, ids.shape[1] - n:]
            batch["labels"] = labels
        return batch

    def num_tokens(self, text: str, image_paths: list[str]) -> int:
        if not text:
            return 0
        return int(self._encode_texts([text], [image_paths])["input_ids"].shape[1])


def context_window(lm) -> int:
    tc = lm.model.config.get_text_config()
    return int(getattr(tc, "max_position_embeddings", 0) or 0)


def shots_that_fit(builder: PromptBuilder, demos: list[Sample], query: Sample, limit: int | None = None,
                   reserve: int = 16) -> int:
    """How many of `demos` (in order) fit with the query and `reserve` answer tokens in the context window."""
    limit = limit or context_window(builder.lm)
    if not limit:
        return len(demos)
    lo, hi = 0, len(demos)
    while lo < hi:  # largest k with num_tokens(k) + reserve <= limit
        mid = (lo + hi + 1) // 2
        p = builder.build(demos[:mid], query)
        if builder.num_tokens(p.text, p.image_paths) + reserve <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo
