"""The README's Python code and docs/python-api.md's run as written (on the tiny models they name), in a fresh
folder with a fresh M2IV_HOME: a reader can paste them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.parametrize("doc", ["README.md", "docs/python-api.md"])
def test_the_python_code_of_the_docs_runs(doc, tmp_path):
    # Was: the README's snippet used an `inputs` it never defined, and nothing ran it.
    blocks = python_blocks(ROOT / doc)
    assert blocks, f"{doc} has no python block"
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks))  # one script: later blocks use what earlier ones defined
    env = {**os.environ, "M2IV_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1", "M2IV_PROGRESS_SECONDS": "600"}
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, f"{doc}:\n{r.stderr[-3000:]}"
    assert r.stdout.strip()  # the examples print what they computed
