"""Moving entries in and out of a library: `m2iv library export ENTRY OUT[.tar]` and `import PATH`.

An export is a vector directory (the two files exactly as added) plus `library.json` (the entry's
metadata) and, when the entry has them, `prototype.safetensors` and `train_log.jsonl`; as a tar, under one
folder. Importing checks the archive (archive.py) and the config (vectors/validate.py) before anything is built.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save
from safetensors.torch import load

from m2iv.constants import CONFIG_NAME, TRAIN_DIR_SUFFIX, TRAIN_LOG_NAME, VECTORS_NAME
from m2iv.errors import M2IVError
from m2iv.files import write_dir_atomic
from m2iv.library.archive import extract_tar, write_tar
from m2iv.library.blobs import MAX_TRAIN_LOG_BYTES, parse_train_log, sha256_bytes
from m2iv.library.entry import ID_RE, META_FORMAT, Entry, dig
from m2iv.vectors.format import read_config, vectors_from_tensors
from m2iv.vectors.validate import check_tensor_bytes, validate_config

if TYPE_CHECKING:
    from m2iv.library.store import Library

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
        files[TRAIN_LOG_NAME] = _jsonl(train_log)
    if entry.prototype is not None:

        files[PROTOTYPE_NAME] = save({"prototype": entry.prototype.astype(np.float32)},
                                    metadata={"format": "m2iv-library-prototype"})
    return files


def export(lib: Library, ref: str, out: str | Path, force: bool = False) -> Path:
    """Write the entry as a vector directory at `out`, or as a tar when `out` ends with `.tar`. An existing `out`
    (a file, or a folder with anything in it) is refused unless `force`; even then a folder is replaced only when
    it is a vector directory, never over a user's files."""

    entry = lib.get(ref)
    files = entry_files(entry, lib.read_blob(entry), lib.blobs.read_train_log(entry))
    out = Path(out).expanduser()
    exists = out.is_file() or out.is_symlink() or out.is_dir() and any(out.iterdir())
    if exists and not force:
        raise M2IVError(f"{out} already exists; pass --force to replace it (force=True), or export to a new path")
    if out.suffix == ".tar":
        try:
            mtime = datetime.fromisoformat(entry.created_at).timestamp()
        except ValueError:
            mtime = 0.0
        return write_tar(out, files, folder=entry.name, mtime=mtime)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CONFIG_NAME).is_file())):
        raise M2IVError(f"{out} exists and is not a vector directory; export to a new path")
    write_dir_atomic(out, {n: file_writer(b) for n, b in files.items()})
    return out


def import_path(lib: Library, path: str | Path, name: str | None = None) -> Entry:
    """Add an exported directory or tar (metadata, tags and prototype restored); an entry already here
    with the same id and content is returned as it is."""
    path = Path(path).expanduser()
    if path.is_file():
        with lib.scratch() as tmp:
            extract_tar(path, tmp)
            try:
                return _import_dir(lib, _find_vector_dir(tmp, path), name, source=path)
            except M2IVError as e:  # name the archive, not the scratch folder it was unpacked into
                raise M2IVError(str(e).replace(str(tmp), str(path))) from None
    if not path.exists():
        raise M2IVError(f"nothing to import at {path}; give a vector directory or a .tar from "
                        "`m2iv library export`")
    return _import_dir(lib, path, name, source=path)


def _read_meta(directory: Path, source: Path, sha: str) -> dict:
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


def _import_dir(lib: Library, directory: Path, name: str | None, source: Path, origin: str | None = None,
                derived_name: str | None = None) -> Entry:
    """`origin` (e.g. hf://org/name@commit) and `derived_name` replace the folder's path and name where the folder
    is a download's snapshot, named by a commit hash."""
    config, config_text, data = read_vector_dir(directory)
    meta = _read_meta(directory, source, config["sha256"])
    eid = meta.get("id") if isinstance(meta.get("id"), str) and ID_RE.match(meta["id"]) else None
    if eid and lib.index.id_taken(eid):
        same = lib.index.entry_by_id(eid)
        if same.sha256 == config["sha256"] and name in (None, same.name):
            return same
    proto, pinfo = None, meta.get("prototype_info") if isinstance(meta.get("prototype_info"), dict) else None
    if (directory / PROTOTYPE_NAME).is_file():

        try:
            proto = load_file(str(directory / PROTOTYPE_NAME))["prototype"]
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise M2IVError(f"{directory / PROTOTYPE_NAME} is not a readable prototype ({e})") from None
    fields = {k: meta.get(k) for k in ("task", "method", "shots", "metrics", "tags", "description", "provenance",
                                       "created_at")}
    if not isinstance(fields["tags"], list):
        fields["tags"] = []
    src_name = name or (meta.get("name") if isinstance(meta.get("name"), str) else None)
    return lib.insert(
        config, config_text, data, name=src_name, derived_name=derived_name or directory.resolve().name,
        tags=[str(t) for t in fields["tags"] or []], description=str(fields["description"] or ""),
        task=fields["task"] if isinstance(fields["task"], str) else dig(config, "method_config", "task"),
        method=fields["method"] if isinstance(fields["method"], str) else config["method"],
        shots=fields["shots"] if isinstance(fields["shots"], int) else None,
        metrics=fields["metrics"] if isinstance(fields["metrics"], dict) else config.get("metrics") or {},
        provenance=fields["provenance"] if isinstance(fields["provenance"], dict) else
        {"kind": "imported", "from": origin or str(source)},
        prototype=proto, prototype_info=pinfo, entry_id=eid,
        created_at=fields["created_at"] if isinstance(fields["created_at"], str) else None,
        train_log=train_log_of(directory, config))


def _find_vector_dir(root: Path, source: Path) -> Path:
    if (root / CONFIG_NAME).is_file():
        return root
    found = [p for p in root.iterdir() if p.is_dir() and (p / CONFIG_NAME).is_file()]
    if len(found) != 1:
        raise M2IVError(f"{source} holds {'no' if not found else 'several'} vector directories; give a tar written "
                        "by `m2iv library export ENTRY OUT.tar`")
    return found[0]


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


def _jsonl(records: list[dict]) -> bytes:
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
            return _jsonl(records)
    return None


def vectors_from_bytes(data: bytes, config: dict, where: str):


    validate_config(config, where)  # before safetensors or torch allocate anything the config names
    check_tensor_bytes(config, len(data), where)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as e:
        raise M2IVError(f"{where}: tensors are not a readable safetensors file ({e})") from None
    return vectors_from_tensors(tensors, config, where)
