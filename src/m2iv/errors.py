"""One exception type whose message is a single line naming the cause and the fix."""

from __future__ import annotations


class M2IVError(Exception):
    """A user-facing error; the CLI prints `error: <message>` and exits 2 without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
