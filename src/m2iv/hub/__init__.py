"""Vectors on the Hugging Face Hub: `save_pretrained` / `from_pretrained` / `push_to_hub` (pretrained.py), the
model card (card.py), `hf://org/name[@rev]` specs read from the local cache and uploads (remote.py).

The repository layout is m2iv's vector directory (`m2iv_config.json` + `vectors.safetensors`) plus README.md,
so a downloaded snapshot is a vector directory every m2iv command reads as it is.
"""
