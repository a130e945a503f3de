"""How a library entry is written as files and read back (the encoding both the store and export/import use):
an entry's files (`m2iv_config.json` exactly as added, the tensors, `library.json` metadata, optional
`prototype.safetensors` and `train_log.jsonl`), and a vector directory read back as verified (config, text, bytes).
It sits below store.py and transfer.py so the store never needs transfer for its own reads and writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save
from safetensors.torch import load

from m2iv.constants import CONFIG_NAME, TRAIN_DIR_SUFFIX, TRAIN_LOG_NAME, VECTORS_NAME
from m2iv.errors import M2IVError
from m2iv.library.blobs import MAX_TRAIN_LOG_BYTES, parse_train_log, sha256_bytes
from m2iv.library.entry import META_FORMAT, Entry, dig
from m2iv.vectors.format import read_config, vectors_from_tensors
from m2iv.vectors.validate import check_tensor_bytes, validate_config

META_NAME = "library.json"  # entry metadata next to an exported vector directory's two files
PROTOTYPE_NAME = "prototype.safetensors"


def file_writer(data: bytes):
    def write(path: Path) -> None:
        path.write_bytes(data)

    return write


def entry_files(entry: Entry, data: bytes, train_log: list[dict] | None = None) -> dict[str, bytes]:
    """The files of an exported entry (name -> bytes); `data` is its verified tensor file."""
    files = {VECTORS_NAME: data, CONFIG_NAME: entry.config_text.encode(),
             META_NAME: (json.dumps(entry.meta(), indent=2, sort_keys=True) + "\n").encode()}
    if train_log:
        files[TRAIN_LOG_NAME] = jsonl_bytes(train_log)
    if entry.prototype is not None:

        files[PROTOTYPE_NAME] = save({"prototype": entry.prototype.astype(np.float32)},
                                    metadata={"format": "m2iv-library-prototype"})
    return files


def read_meta(directory: Path, source: Path, sha: str) -> dict:
    if not (directory / META_NAME).is_file():
        return {}
    try:
        meta = json.loads((directory / META_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise M2IVError(f"{directory / META_NAME} is not valid JSON ({e}); the export is damaged") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("library_format"), int):
        raise M2IVError(f"{directory / META_NAME} is not library metadata; the export is damaged")
    if meta["library_format"] > META_FORMAT:
        raise M2IVError(f"{source} was exported by a newer m2iv (library format {meta['library_format']}); "
                        "upgrade m2iv")
    if meta.get("sha256") not in (None, sha):
        raise M2IVError(f"{directory / META_NAME} describes other vectors (sha256 differs); the export is damaged")
    return meta


def read_prototype(directory: Path):
    """The prototype array of an exported entry in `directory`, or None when it has none."""
    if not (directory / PROTOTYPE_NAME).is_file():
        return None
    try:
        return load_file(str(directory / PROTOTYPE_NAME))["prototype"]
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise M2IVError(f"{directory / PROTOTYPE_NAME} is not a readable prototype ({e})") from None


def read_vector_dir(directory: Path) -> tuple[dict, str, bytes]:
    """(validated config, its exact text, tensor bytes) of a vector directory, everything verified."""

    config = read_config(directory)
    config_text = (directory / CONFIG_NAME).read_text()
    tpath = directory / VECTORS_NAME
    if not tpath.is_file():
        raise M2IVError(f"{directory} has no {VECTORS_NAME}; the vector directory is incomplete")
    data = tpath.read_bytes()
    if sha256_bytes(data) != config["sha256"]:
        raise M2IVError(f"{tpath} does not match the sha256 in {CONFIG_NAME} (truncated or modified); "
                        "re-export or retrain the vectors")
    vectors_from_bytes(data, config, where=str(tpath))  # the tensors must match the config's layout
    return config, config_text, data


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def train_log_of(directory: Path, config: dict) -> bytes | None:
    """The training log that belongs to the vector directory `directory`, to keep beside its blob: its own
    `train_log.jsonl` (an export), else the trainer's `<directory>.train/train_log.jsonl`. A log whose last step
    is not the config's `training.steps_done` belongs to another run of that folder and is not kept; nor is one
    over MAX_TRAIN_LOG_BYTES (the curve is a view of the training, never needed to use the vectors)."""
    done = dig(config, "training", "steps_done")
    for path in (directory / TRAIN_LOG_NAME, directory.parent / f"{directory.name}{TRAIN_DIR_SUFFIX}" / TRAIN_LOG_NAME):
        try:
            if not path.is_file() or path.stat().st_size > MAX_TRAIN_LOG_BYTES:
                continue
            records = parse_train_log(path.read_bytes())
        except OSError:
            continue
        if records and (not isinstance(done, int) or records[-1].get("step") == done):
            return jsonl_bytes(records)
    return None


def vectors_from_bytes(data: bytes, config: dict, where: str):


    validate_config(config, where)  # before safetensors or torch allocate anything the config names
    check_tensor_bytes(config, len(data), where)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as e:
        raise M2IVError(f"{where}: tensors are not a readable safetensors file ({e})") from None
    return vectors_from_tensors(tensors, config, where)
