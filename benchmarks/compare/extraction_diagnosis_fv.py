"""FV with the edit-layer sweep on sandbox-colour-nonce (issue 14; output in extraction_diagnosis.md)."""
import time, json, torch
from m2iv.models.loading import load_model
from m2iv.data.tasks import get_task
from m2iv.data.prompts import PromptBuilder
from m2iv.methods import get_method
from m2iv.methods.extraction import first_token_scores
t0 = time.time()
lm = load_model("sandbox"); task = get_task("sandbox-colour-nonce"); sp = task.splits(None, seed=0)
m = get_method("fv", {"shots": 16, "seed": 0, "method_config": {"n_mean_prompts": 16, "n_ie_prompts": 8, "sweep": True, "batch_size": 4}})
vec, info = m.fit(lm, task, sp)
print(f"fit {time.time()-t0:.0f}s heads {info['top_heads']} edit_layer {info['edit_layer']} fv_norm {info['fv_norm']:.2f}", flush=True)
print({k: round(v['accuracy'], 3) for k, v in info['dev_by_layer'].items()}, flush=True)
b = PromptBuilder(lm, task.instruction, task.answer_template)
print("test50 first-token acc, swept layer:", first_token_scores(lm, b, sp["test"][:50], vec, 10), flush=True)
fv = vec.vector("layer")[0].detach().clone()
for layer in (10, 23, 26):
    for a in (1.0, 3.0):
        print(layer, a, first_token_scores(lm, b, sp["test"][:50], m.make_vectors(lm, layer, a * fv), 10), flush=True)
print(f"done {time.time()-t0:.0f}s")
