"""The Hugging Face Hub as a transport: `hf://org/name[@rev]` specs read from the local cache and uploads
(remote.py), and the model card (card.py). It knows files, not vectors, so it sits below `m2iv.vectors`, whose
`save_pretrained` / `from_pretrained` / `push_to_hub` (vectors/pretrained.py) and the library's push/pull use it.

The repository layout is m2iv's vector directory (`m2iv_config.json` + `vectors.safetensors`) plus README.md,
so a downloaded snapshot is a vector directory every m2iv command reads as it is.
"""
