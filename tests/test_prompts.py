import pytest
import torch

from conftest import ALL_FAMILIES, tiny, write_samples
from m2iv.data.prompts import PromptBuilder, shots_that_fit


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("imgs"), 6)


def _text_only(samples):
    from dataclasses import replace

    return [replace(s, images=()) for s in samples]


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_interleaved_prompt_runs_through_the_model(family, samples):
    lm = tiny(family)
    ss = samples if lm.is_vlm else _text_only(samples)
    b = PromptBuilder(lm, "{question} Answer in one word.")
    prompts = [b.build(ss[:2], ss[2]), b.build(ss[3:5], ss[5])]
    batch = b.encode(prompts)
    qs = batch.pop("query_start")
    with torch.no_grad():
        out = lm.model(**batch)  # image tokens match image features for every family
    assert out.logits.shape[:2] == batch["input_ids"].shape
    if lm.is_vlm:
        n_img = torch.isin(batch["input_ids"], torch.tensor(lm.adapter.image_token_ids)).sum(1)
        assert (n_img > 0).all()
    assert (qs > 0).all() and (qs < batch["input_ids"].shape[1]).all()


@pytest.mark.parametrize("family", ["idefics2", "qwen2_vl", "llava", "smolvlm", "llama"])
def test_teacher_and_student_share_the_query_tokens(family, samples):
    lm = tiny(family)
    ss = samples if lm.is_vlm else _text_only(samples)
    b = PromptBuilder(lm)
    teacher = b.encode([b.build(ss[:4], ss[4])])
    student = b.encode([b.build([], ss[4])])
    t_q = teacher["input_ids"][0, int(teacher["query_start"][0]):]
    s_q = student["input_ids"][0, int(student["query_start"][0]):]
    assert torch.equal(t_q, s_q)
    assert teacher["input_ids"].shape[1] > student["input_ids"].shape[1]


@pytest.mark.parametrize("family", ["idefics3", "qwen2_5_vl", "mistral"])
def test_answer_labels_cover_exactly_the_answer(family, samples):
    lm = tiny(family)
    ss = samples if lm.is_vlm else _text_only(samples)
    b = PromptBuilder(lm)
    batch = b.encode([b.build(ss[:1], ss[1], answer="blue sky"), b.build([], ss[2], answer="red")])
    for i, ans in enumerate(["blue sky", "red"]):
        lab = batch["labels"][i]
        ids = lab[lab != -100]
        assert lm.tokenizer.decode(ids).strip() == ans
        assert (lab[: -len(ids)] == -100).all()


def test_fallback_format_without_chat_template(samples):
    lm = tiny("llava")
    b = PromptBuilder(lm)
    b.chat_template = None
    p = b.build(samples[:1], samples[1])
    assert p.text == f"<image>{samples[0].question}\nAnswer: red\n<image>{samples[1].question}\nAnswer:"


def test_shots_that_fit(samples):
    lm = tiny("idefics2")
    b = PromptBuilder(lm)
    demos = samples[:5]
    sizes = [b.num_tokens(p.text, p.image_paths) for p in (b.build(demos[:k], samples[5]) for k in range(6))]
    limit = sizes[3] + 16  # exactly 3 shots fit with 16 answer tokens reserved
    assert shots_that_fit(b, demos, samples[5], limit=limit) == 3
    assert shots_that_fit(b, demos, samples[5], limit=limit - 1) == 2
    assert shots_that_fit(b, demos, samples[5], limit=10**6) == 5
