"""The sandbox suite: tasks on held-out easy-vqa images whose definition is fixed across queries, that a
zero-shot model cannot guess but demonstrations reveal (a colour or shape mapped to invented words,
French words, adjectives or digits). The evaluation words and instruction never occur in the sandbox's
training (see episodes.py). Demonstrations and training queries come from easy-vqa's train images,
test queries from its test images; `m2iv eval sandbox --task sandbox-colour-nonce` runs one.
"""

from __future__ import annotations

from pathlib import Path

from m2iv.data.sample import Sample

# name -> (attribute, {attribute value: answer word}); the same mappings the sandbox card reports.
SUITE: dict[str, tuple[str, dict[str, str]]] = {}
INSTRUCTION = ""


def _load_definitions() -> None:
    global INSTRUCTION
    if SUITE:
        return
    from m2iv.sandbox.episodes import EVAL_INSTRUCTION, EVAL_TASKS

    INSTRUCTION = EVAL_INSTRUCTION
    for key, spec in EVAL_TASKS.items():
        SUITE["sandbox-" + key.replace("_", "-")] = spec


def task_names() -> list[str]:
    _load_definitions()
    return list(SUITE)


def load(name: str, split: str) -> list[Sample]:
    """Samples of suite task `name` on easy-vqa `split` images (one question per labelled image)."""
    from m2iv.sandbox.labels import image_labels, image_paths

    _load_definitions()
    attribute, mapping = SUITE[name]
    labels, paths = image_labels(split), image_paths(split)
    out = []
    for image_id in sorted(labels):
        colour, shape = labels[image_id]
        value = colour if attribute == "colour" else shape
        out.append(Sample(id=f"{split}-{image_id}", images=(str(Path(paths[image_id])),), question=INSTRUCTION,
                          answers=(mapping[value],), split=split, meta={"colour": colour, "shape": shape}))
    return out


def register(datasets, tasks, task_cls) -> None:
    """Register every suite task (and its dataset loader) in the given registries."""
    for name in task_names():
        def loader(root, split, _name=name):
            return load(_name, split)

        loader.needs_root = False  # type: ignore[attr-defined]
        if name not in datasets:
            datasets.register(name, loader)
        if name not in tasks:
            attribute, mapping = SUITE[name]
            tasks.register(name, task_cls(
                name, name, "exact_match", "test", "train", instruction="{question}", max_new_tokens=6,
                n_support=256, n_train=512, n_test=200,
                description=f"sandbox: {attribute} -> "
                            f"{', '.join(f'{k}:{v}' for k, v in list(mapping.items())[:3])}..."))
