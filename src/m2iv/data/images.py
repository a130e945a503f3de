"""Image reading with one clear error per unreadable file, and a pixel bound checked before decoding.

A 100 KB PNG can declare 400 Mpx (a decompression bomb): PIL reads the size from the header, so
`open_image` refuses anything over `max_pixels()` before a single row is decoded. The bound is
`M2IV_MAX_IMAGE_PIXELS` (default 64 Mpx, about 8000 x 8000, far above any benchmark image).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from m2iv.errors import M2IVError

DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "M2IV_MAX_IMAGE_PIXELS"


class ImageError(M2IVError):
    """An image that cannot be read; `path` names it so a runner can skip and record it."""

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot read image {path} ({cause}); fix or remove the file, or pass --on-bad-image skip")


def max_pixels() -> int:
    """The largest image (width x height) m2iv decodes: $M2IV_MAX_IMAGE_PIXELS or DEFAULT_MAX_PIXELS."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise M2IVError(f"{MAX_PIXELS_ENV}={raw!r} is not a positive integer; set it to a pixel count such as "
                        f"{DEFAULT_MAX_PIXELS} or unset it")
    return value


@contextmanager
def pixel_limit() -> Iterator[int]:
    """PIL's own bomb check set to our bound, its warning raised as an error, for code that opens images."""
    limit = max_pixels()
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield limit
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _decode(source: str | Path | IO[bytes]) -> Image.Image:
    with pixel_limit() as limit:
        try:
            im = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(None, limit) from None
        with im:
            w, h = im.size
            if w * h > limit:  # checked on the header, before decoding
                raise _too_large(f"{w}x{h} = {w * h} pixels", limit)
            im.load()
            return im.convert("RGB")


def _too_large(size: str | None, limit: int) -> Image.DecompressionBombError:
    return Image.DecompressionBombError(f"{size or 'size'} over the limit of {limit} pixels, a possible "
                                        f"decompression bomb; raise {MAX_PIXELS_ENV} to read it")


_BAD = (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning, OSError, SyntaxError,
        ValueError, EOFError, MemoryError)


def _cause(e: BaseException) -> str:
    return type(e).__name__ + (f": {e}" if str(e) else "")


def _kind(mode: int) -> str | None:
    """Why a file of this mode is not an image file (None: a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not an image file"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not an image file; m2iv does not read from pipes"
    return "a socket or device, not an image file"


def _open_regular(p: Path) -> io.BufferedReader:
    """The file opened for reading without ever blocking: O_NONBLOCK makes opening a FIFO return at once, and
    the mode is checked on the open descriptor, so a path swapped for a FIFO after a check cannot hang a run."""
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(p, "a broken symbolic link" if os.path.islink(p) else "no such file") from None
    except NotADirectoryError:
        raise ImageError(p, "no such file: a part of its path is a file, not a folder") from None
    except OSError as e:
        raise ImageError(p, _cause(e)) from None
    kind = _kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise ImageError(p, kind)
    return os.fdopen(fd, "rb")


def open_image(path: str | Path) -> Image.Image:
    """Open as RGB, fully decoded now (so a truncated file or a bomb fails here, not inside the model); a path
    that is missing, a folder or a FIFO is named as such."""
    p = Path(path)
    with _open_regular(p) as f:
        try:
            return _decode(f)
        except _BAD as e:
            raise ImageError(p, _cause(e)) from None


def image_from_bytes(data: bytes, where: str) -> Image.Image:
    """Decode image bytes (e.g. a Hugging Face Image cell) under the same bound, or one-line ImageError."""
    try:
        return _decode(io.BytesIO(data))
    except _BAD as e:
        raise ImageError(where, _cause(e)) from None
