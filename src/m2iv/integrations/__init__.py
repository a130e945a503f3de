"""m2iv inside other evaluation tools.

- lmms-eval: the `m2iv` model (lmms_eval_model.py), registered through lmms-eval's `lmms_eval.models` entry
  point: any supported LVLM, with injected vectors (`vectors=DIR|library:NAME|hf://org/name`) or multimodal
  in-context learning from a support split (`shots=N`), which lmms-eval itself lacks. harness.py answers,
  lmms_docs.py turns lmms-eval documents into m2iv samples.
- lm-evaluation-harness: its `steered` model's steering file, written from and read into m2iv vectors
  (steered.py), for the operators the two share.
"""
