"""Weight and KV-cache adapters trained by the vector trainer: LoRA and a trainable KV prefix (PEFT's Cartridge).

They are applied with forward hooks only (no module is replaced) and saved as PEFT adapter directories
(`adapter_config.json` + `adapter_model.safetensors`, loadable by `peft.PeftModel.from_pretrained`) plus an
`m2iv_config.json` sidecar that records what m2iv needs (method, model fingerprint, recipe, hash)."""
