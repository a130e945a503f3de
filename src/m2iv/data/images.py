"""Image reading with one clear error per unreadable file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from m2iv.errors import M2IVError


class ImageError(M2IVError):
    """An image that cannot be read; `path` names it so a runner can skip and record it."""

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot read image {path} ({cause}); fix or remove the file, or pass --on-bad-image skip")


def open_image(path: str | Path) -> Image.Image:
    """Open as RGB, fully decoded now (so a truncated file fails here, not inside the model)."""
    p = Path(path)
    if not p.is_file():
        raise ImageError(p, "no such file")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(p, type(e).__name__ + (f": {e}" if str(e) else "")) from None
