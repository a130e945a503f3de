"""Additive single-vector check (issue 14; output in extraction_diagnosis.md): add (mean 16-shot ICL last-position
state - mean 0-shot state, over 16 train queries) x1 or x3 at layer l of the zero-shot run, 50 test queries."""
import random, time, torch
from m2iv.models.loading import load_model
from m2iv.data.tasks import get_task
from m2iv.data.prompts import PromptBuilder
from m2iv.methods.extraction import answer_first_ids, record_last, sample_demos
t0 = time.time()
lm = load_model("sandbox"); task = get_task("sandbox-colour-nonce"); sp = task.splits(None, seed=0)
b = PromptBuilder(lm, task.instruction, task.answer_template)
rng = random.Random(1)
ext = rng.sample(sp["train"], 16)
icl = record_last(lm, b, [b.build(sample_demos(rng, sp["support"], 16, [q], "d"), q) for q in ext], "layer", 4).mean(0)
zs_ext = record_last(lm, b, [b.build([], q) for q in ext], "layer", 8).mean(0)
diff = icl - zs_ext  # (L, D)
test = sp["test"][:50]
tgt = answer_first_ids(b, [[] for _ in test], test)
zb = b.encode([b.build([], q) for q in test]); zb.pop("query_start")
with torch.no_grad():
    out = lm.model(**zb, use_cache=True)
cache = out.past_key_values; cache.crop(-1)
print(f"extracted ({time.time()-t0:.0f}s); 0-shot acc {float((out.logits[:, -1].argmax(-1) == tgt).float().mean()):.2f}", flush=True)
def run(layer, vec):
    def hook(_m, _a, o):
        h = (o[0] if isinstance(o, tuple) else o).clone(); h[:, -1] += vec
        return (h, *o[1:]) if isinstance(o, tuple) else h
    hd = lm.adapter.module(layer, "layer").register_forward_hook(hook)
    try:
        with torch.no_grad():
            p = lm.model(input_ids=zb["input_ids"][:, -1:], attention_mask=zb["attention_mask"], past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1)
        cache.crop(-1)
    finally:
        hd.remove()
    return float((p == tgt).float().mean()), len(set(p.tolist())), lm.tokenizer.decode([int(torch.mode(p).values)])
print("layer | add diff x1 (acc, #distinct, mode) | x3")
for layer in range(lm.adapter.num_layers):
    print(layer, run(layer, diff[layer]), run(layer, 3 * diff[layer]), flush=True)
