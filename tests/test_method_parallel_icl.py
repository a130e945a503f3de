"""Parallel-ICL: the merged next-token distribution against the weighted product of per-chunk softmaxes computed by
hand (each chunk its own unbatched forward), the chunkings, and one chunk being exactly ICL."""

import json

import pytest
import torch

from conftest import fixture_task, tiny, write_samples
from m2iv.data.prompts import PromptBuilder
from m2iv.errors import M2IVError
from m2iv.evaluate.runner import EvalConfig, evaluate
from m2iv.methods import get_method
from m2iv.methods.parallel_icl.chunking import kmeans_chunks, random_chunks

TASK = fixture_task()


@pytest.fixture()
def splits(tmp_path):
    return {"train": [], "support": write_samples(tmp_path / "support", 10, prefix="s"),
            "test": write_samples(tmp_path / "test", 4, prefix="t")}


def _prepared(lm, splits, tmp_path, monkeypatch, **settings):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    m = get_method("parallel-icl", {"method_config": settings})
    m.prepare(lm, TASK, splits)
    return m


@pytest.mark.parametrize("chunking", ["cluster", "random"])
def test_merged_distribution_is_the_weighted_product_of_the_chunks(tmp_path, monkeypatch, splits, chunking):
    lm = tiny("llava")
    m = _prepared(lm, splits, tmp_path, monkeypatch, chunks=3, chunking=chunking, temperature=0.05)
    builder = PromptBuilder(lm, TASK.instruction, TASK.answer_template)
    q, demos = splits["test"][0], splits["support"][:7]
    batch = m.encode(lm, builder, [(q, demos)])
    with torch.no_grad():
        new, tokens = m.generate(lm, batch, None, max_new_tokens=2, do_sample=False,
                                 pad_token_id=lm.tokenizer.pad_token_id)
    chunks, centroids = m.chunks(q, demos)
    assert sorted(d.id for c in chunks for d in c) == sorted(d.id for d in demos) and len(chunks) == 3
    # by hand: each chunk alone, its next-token softmax; weights softmax(cos(query, centroid) / T)
    e_q = torch.nn.functional.normalize(m.embed([q]).float(), dim=-1)[0]
    w = torch.softmax((centroids @ e_q) / 0.05, dim=0)
    logp = []
    for c in chunks:
        enc = builder.encode([builder.build(c, q)])
        enc.pop("query_start")
        with torch.no_grad():
            logp.append(torch.log_softmax(lm.model(**enc).logits[0, -1].float(), -1))
    expected = torch.softmax(sum(wk * lp for wk, lp in zip(w, logp, strict=True)), -1)
    got = m.merger.history[0][0].exp()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert int(new[0, 0]) == int(expected.argmax())
    assert tokens[0] == sum(builder.num_tokens(builder.build(c, q).text, builder.build(c, q).image_paths)
                            for c in chunks)


def test_one_chunk_is_icl(tmp_path, monkeypatch, splits):
    lm = tiny("llava")
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    cfg = EvalConfig(shots=4, batch_size=2)
    icl = evaluate(lm, TASK, get_method("icl"), cfg, tmp_path / "icl", splits=splits)
    par = evaluate(lm, TASK, get_method("parallel-icl", {"method_config": {"chunks": 1}}), cfg, tmp_path / "par",
                   splits=splits)
    rows = [[json.loads(x) for x in (tmp_path / d / "predictions.jsonl").read_text().splitlines()]
            for d in ("icl", "par")]
    assert [r["raw"] for r in rows[0]] == [r["raw"] for r in rows[1]]  # same demonstrations, same greedy answers
    assert [r["demos"] for r in rows[0]] == [r["demos"] for r in rows[1]]
    assert par["mean_prompt_tokens"] == icl["mean_prompt_tokens"]


def test_uniform_weights_and_bad_settings():
    m = get_method("parallel-icl", {"method_config": {"weighting": "uniform", "chunks": 4}})
    w = m.weights(torch.randn(2, 8), torch.randn(2, 4, 8))
    assert torch.equal(w, torch.full((2, 4), 0.25))
    for bad in ({"chunks": 0}, {"chunking": "sorted"}, {"temperature": 0}):
        with pytest.raises(M2IVError):
            get_method("parallel-icl", {"method_config": bad}).method_config()


def test_random_chunks_partition_evenly_and_kmeans_finds_separated_groups():
    parts = random_chunks(10, 3, seed=0, key="q")
    assert sorted(i for p in parts for i in p) == list(range(10)) and sorted(map(len, parts)) == [3, 3, 4]
    assert parts == random_chunks(10, 3, seed=0, key="q") != random_chunks(10, 3, seed=0, key="other")
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=-1) * 10
    emb = torch.cat([c + torch.randn(4, 16, generator=g) * 0.1 for c in centres])  # 3 tight groups of 4
    emb = torch.nn.functional.normalize(emb, dim=-1)
    order = torch.randperm(12, generator=g)
    found = kmeans_chunks(emb[order], 3, seed=0, key="q")
    groups = [sorted(int(order[i]) // 4 for i in c) for c in found]
    assert sorted(groups) == [[0] * 4, [1] * 4, [2] * 4]


def test_eval_takes_its_settings_on_the_command_line():
    from m2iv.cli.main import build_parser
    from m2iv.cli.train import method_config_from_args
    from m2iv.methods.parallel_icl import ParallelICLConfig

    args = build_parser().parse_args(["eval", "tiny:llava", "--task", "t", "--method", "parallel-icl", "--shots", "8",
                                      "--method-config", "chunks=2", "--method-config", "chunking=random",
                                      "--out", "o"])
    assert method_config_from_args("parallel-icl", ParallelICLConfig, args) == {"chunks": 2, "chunking": "random"}
