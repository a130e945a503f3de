"""Why Task Vectors answer an invented word but not the mapping (issue 14); output: extraction_diagnosis.md.

    OMP_NUM_THREADS=1 M2IV_HOME=... PYTHONPATH=src python benchmarks/compare/extraction_diagnosis.py \
        sandbox-colour-nonce 50

First 50 test queries, 16 random support demonstrations each (seed 0). Per layer l, the zero-shot prompt's
decoder-layer-l output at its last position (the assistant header's final newline, the token before the
answer) is replaced by: the mean over queries of the TV state (demos + a dummy train query, the original's
extraction), the query's own TV state, or the query's own full 16-shot ICL state; plus an 8-way
nearest-centroid probe of the query's answer (= its colour) from the zero-shot last-position state (centroids
from 160 train queries). The patched runs recompute only the last position on a cached prefix (exact). The
last column (same 0-shot centroids applied to ICL states) mixes two prompt distributions; it is not read.
"""
import random, sys, time, json
import torch
from m2iv.models.loading import load_model
from m2iv.data.tasks import get_task
from m2iv.data.prompts import PromptBuilder
from m2iv.methods.extraction import answer_first_ids, model_batches, record_last, sample_demos

torch.manual_seed(0)
TASK = sys.argv[1] if len(sys.argv) > 1 else "sandbox-colour-nonce"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 50
SHOTS = 16
lm = load_model("sandbox"); task = get_task(TASK); sp = task.splits(None, seed=0)
b = PromptBuilder(lm, task.instruction, task.answer_template)
test = sp["test"][:N]; train = sp["train"]
rng = random.Random(0)
L = lm.adapter.num_layers
t0 = time.time()
demos = [sample_demos(rng, sp["support"], SHOTS, [q], "diag") for q in test]
dummies = [rng.choice(train) for _ in test]
tgt = answer_first_ids(b, [[] for _ in test], test)
# ICL on the real query
icl_prompts = [b.build(d, q) for d, q in zip(demos, test)]
hits = []
icl_states = []
from m2iv.vectors.record import record
with torch.no_grad(), record(lm.model, lm.adapter, sites=("layer",)) as rec:
    for i, batch in enumerate(model_batches(lm, b, icl_prompts, 4)):
        lg = lm.model(**batch).logits[:, -1]
        hits.append(lg.argmax(-1) == tgt[i*4:i*4+lg.shape[0]])
icl_states = rec.stacked("layer")  # (N, L, D)
print(f"ICL {SHOTS}-shot first-token acc on {N}: {torch.cat(hits).float().mean():.2f}  ({time.time()-t0:.0f}s)", flush=True)
# TV extraction: demos + dummy query (the original)
dum_states = record_last(lm, b, [b.build(d, q) for d, q in zip(demos, dummies)], "layer", 4)  # (N, L, D)
zs_prompts = [b.build([], q) for q in test]
zs_states = record_last(lm, b, zs_prompts, "layer", 8)
print(f"extracted ({time.time()-t0:.0f}s)", flush=True)

zs_batch = b.encode(zs_prompts); zs_batch.pop("query_start")
assert int(zs_batch["attention_mask"].min()) == 1
with torch.no_grad():
    _pre = lm.model(input_ids=zs_batch["input_ids"][:, :-1], attention_mask=zs_batch["attention_mask"][:, :-1],
                    pixel_values=zs_batch["pixel_values"], pixel_attention_mask=zs_batch.get("pixel_attention_mask"),
                    use_cache=True)
CACHE = getattr(_pre, "cache", None) or _pre.past_key_values

def patched_acc(layer, vecs):
    """vecs (N, D): replace decoder-layer output at the last position (prefix from the cache: exact)."""
    mod = lm.adapter.module(layer, "layer")
    def hook(_m, _a, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone(); h[:, -1] = vecs.to(h)
        return (h, *out[1:]) if isinstance(out, tuple) else h
    hd = mod.register_forward_hook(hook)
    try:
        with torch.no_grad():
            p = lm.model(input_ids=zs_batch["input_ids"][:, -1:], attention_mask=zs_batch["attention_mask"],
                         cache=CACHE, use_cache=True).logits[:, -1].argmax(-1)
        CACHE.crop(-1)
    finally:
        hd.remove()
    return float((p == tgt).float().mean()), len(set(p.tolist())), lm.tokenizer.decode([int(torch.mode(p).values)])

# colour probe: nearest centroid on train zero-shot last-token states, per layer
ptrain = train[:160]
ptr_states = record_last(lm, b, [b.build([], q) for q in ptrain], "layer", 8)
ytr = [q.answers[0] for q in ptrain]; yte = [q.answers[0] for q in test]
labels = sorted(set(ytr))
def probe(states_tr, states_te, layer):
    cents = torch.stack([states_tr[[i for i, y in enumerate(ytr) if y == c], layer].mean(0) for c in labels])
    x = states_te[:, layer]
    pred = torch.cdist(x, cents).argmin(1)
    return float(sum(labels[int(p)] == y for p, y in zip(pred, yte)) / len(yte))
print(f"probe data ({time.time()-t0:.0f}s)", flush=True)
print("layer | TV mean-vector acc (#distinct, mode) | TV per-query (own demos+dummy) acc (#distinct) | ICL-state patched acc | colour probe 0-shot last tok | probe on ICL last tok")
mean = dum_states.mean(0, keepdim=True).expand(N, -1, -1)
res = {}
for layer in range(L):
    a1 = patched_acc(layer, mean[:, layer]); a2 = patched_acc(layer, dum_states[:, layer])
    a3 = patched_acc(layer, icl_states[:, layer])
    p0 = probe(ptr_states, zs_states, layer); p1 = probe(ptr_states, icl_states, layer)
    res[layer] = (a1, a2, a3, p0, p1)
    print(f"{layer:2d} | {a1[0]:.2f} ({a1[1]}, {a1[2]!r}) | {a2[0]:.2f} ({a2[1]}) | {a3[0]:.2f} | {p0:.2f} | {p1:.2f}  ({time.time()-t0:.0f}s)", flush=True)
