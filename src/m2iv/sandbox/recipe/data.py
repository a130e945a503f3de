"""What every stage of the sandbox recipe trains on: all 5000 easy-vqa images as one pixel table (train
images 0..3999, test images 4000..4999), their colour/shape labels, and label-preserving augmentation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from m2iv.sandbox import assemble as A
from m2iv.sandbox.labels import COLOURS, SHAPES, image_paths, partial_labels

N_TRAIN = 4000  # feature table: train images 0..3999, test images 4000..4999


def load_pixels() -> torch.Tensor:
    """(5000, 3, 64, 64) float pixels normalised like the Idefics3 image processor: (x/255 - 0.5)/0.5."""
    from PIL import Image

    out = []
    for split in ("train", "test"):
        paths = image_paths(split)
        for i in range(len(paths)):
            with Image.open(paths[i]) as im:
                out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return ((x * (1 / 255)) - 0.5) / 0.5


def label_table() -> tuple[torch.Tensor, torch.Tensor]:
    """Per feature-table index: colour idx, shape idx (-1 unknown), for train and test."""
    col = torch.full((N_TRAIN + 1000,), -1, dtype=torch.long)
    shp = torch.full((N_TRAIN + 1000,), -1, dtype=torch.long)
    for split, off in (("train", 0), ("test", N_TRAIN)):
        for i, (c, s) in partial_labels(split).items():
            if c is not None:
                col[off + i] = COLOURS.index(c)
            if s is not None:
                shp[off + i] = SHAPES.index(s)
    return col, shp


def augment(x: torch.Tensor, g: torch.Generator, shift: int = 8) -> torch.Tensor:
    """Label-preserving augmentation of a pixel batch: random horizontal flip and translation (edge padding)."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    dx, dy = torch.randint(0, 2 * shift + 1, (2, len(x)), generator=g).tolist()
    n = x.shape[-1]
    return torch.stack([pad[i, :, dy[i]: dy[i] + n, dx[i]: dx[i] + n] for i in range(len(x))])


def vision_forward(model, px: torch.Tensor) -> torch.Tensor:
    """The ViT's patch features (B, 64, H) of a pixel batch (every patch real: no padding)."""
    mask = torch.ones((px.shape[0], A.IMAGE_SIZE // A.PATCH_SIZE, A.IMAGE_SIZE // A.PATCH_SIZE), dtype=torch.bool)
    return model.model.vision_model(pixel_values=px, patch_attention_mask=mask).last_hidden_state
