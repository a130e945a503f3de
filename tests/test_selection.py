import pytest
import torch

from m2iv.data.sample import Sample
from m2iv.data.selection import FixedSelector, RandomSelector, RicesSelector
from m2iv.errors import M2IVError


def S(i, img=None):
    return Sample(id=f"q{i}", images=(img or f"/img/{i}.png",), question=f"q {i}", answers=("a",))


SUPPORT = [S(i) for i in range(20)]


def test_random_is_seeded_per_query_and_never_the_query():
    sel = RandomSelector(SUPPORT, seed=3)
    q = SUPPORT[5]
    a, b = sel.select(q, 8), sel.select(q, 8)
    assert a == b and q not in a and len(set(a)) == 8
    assert sel.select(SUPPORT[6], 8) != a
    assert RandomSelector(SUPPORT, seed=4).select(q, 8) != a


def test_same_image_is_never_a_demonstration():
    q = Sample(id="other", images=("/img/3.png",), question="?", answers=("x",))
    for _ in range(5):
        assert all("/img/3.png" not in d.images for d in RandomSelector(SUPPORT, seed=_).select(q, 19))


def test_fixed_is_shared_across_queries():
    sel = FixedSelector(SUPPORT, seed=0)
    outside = [Sample(id=f"t{i}", images=(f"/t/{i}",), question="?", answers=("x",)) for i in range(3)]
    assert sel.select(outside[0], 4) == sel.select(outside[1], 4)


def test_rices_picks_nearest_with_most_similar_last(tmp_path):
    calls = []

    def embed(samples):
        calls.append(len(samples))
        return torch.tensor([[1.0, float(s.id.lstrip("q")) if s.id.startswith("q") else 7.2] for s in samples])

    sel = RicesSelector(SUPPORT, embed, cache_dir=tmp_path, cache_key="m")
    q = Sample(id="z", images=("/z.png",), question="?", answers=("a",))  # embeds near q7
    got = [d.id for d in sel.select(q, 3)]
    assert got[-1] == "q7" and set(got) == {"q6", "q7", "q8"}
    RicesSelector(SUPPORT, embed, cache_dir=tmp_path, cache_key="m")  # support embeddings come from cache
    assert calls == [20, 1]


def test_too_few_support_examples():
    with pytest.raises(M2IVError, match="lower --shots"):
        RandomSelector(SUPPORT[:3]).select(SUPPORT[0], 3)
    with pytest.raises(M2IVError, match="support set is empty"):
        RandomSelector([])
