"""The files each official dataset reads under `--data-root` (or `$M2IV_DATA`), per source split: what `m2iv tasks`
shows and docs/models-and-data.md explains. The readers (`m2iv.data.formats`) name the same paths in their errors;
`tests/test_tasks_cli.py` checks that a data root holding exactly these files is enough.

    expected_files("vqav2", "val")   # ['vqav2/v2_OpenEnded_mscoco_val2014_questions.json', ..., 'coco/val2014/']
"""

from __future__ import annotations

from collections.abc import Callable

# dataset -> split -> paths relative to the data root (a trailing / is a folder of images)
LAYOUTS: dict[str, Callable[[str], list[str]]] = {
    "vqav2": lambda s: [f"vqav2/v2_OpenEnded_mscoco_{s}2014_questions.json",
                        f"vqav2/v2_mscoco_{s}2014_annotations.json", f"coco/{s}2014/"],
    "okvqa": lambda s: [f"okvqa/OpenEnded_mscoco_{s}2014_questions.json", f"okvqa/mscoco_{s}2014_annotations.json",
                        f"coco/{s}2014/"],
    "vizwiz": lambda s: [f"vizwiz/annotations/{s}.json", f"vizwiz/{s}/"],
    "gqa": lambda s: [f"gqa/questions/{s}_balanced_questions.json", "gqa/images/"],
    "textvqa": lambda s: [f"textvqa/TextVQA_0.5.1_{s}.json", "textvqa/train_images/"],
    "coco_captions": lambda s: ["coco_captions/dataset_coco.json", "coco/val2014/"]
    + (["coco/train2014/"] if s == "train" else []),
    "flickr30k": lambda s: ["flickr30k/dataset_flickr30k.json", "flickr30k/flickr30k-images/"],
}

# Where each official dataset comes from (the readers' error messages say the same).
SOURCES = {"vqav2": "visualqa.org/download.html", "okvqa": "okvqa.allenai.org", "vizwiz": "vizwiz.org",
           "gqa": "cs.stanford.edu/people/dorarad/gqa", "textvqa": "textvqa.org/dataset",
           "coco_captions": "Karpathy's caption_datasets.zip + cocodataset.org images",
           "flickr30k": "Karpathy's caption_datasets.zip + flickr30k-images"}


def expected_files(dataset: str, split: str) -> list[str]:
    """The paths under the data root that `dataset`'s reader opens for `split` ([] for data that needs no root)."""
    layout = LAYOUTS.get(dataset)
    return layout(split) if layout else []
