"""Run by test_library.py: add every vector directory under SRC to the library at ROOT, racing another worker.

    python _library_worker.py ROOT SRC PREFIX READY_FILE GO_FILE
"""

import sys
import time
from pathlib import Path

from m2iv.library import Library

root, src, prefix, ready, go = sys.argv[1:6]
Path(ready).touch()
deadline = time.time() + 60
while not Path(go).exists():  # both workers start adding at the same moment
    if time.time() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.005)
dirs = sorted(p for p in Path(src).iterdir() if p.is_dir())
t0 = time.time()
with Library(root) as lib:
    for d in dirs:
        lib.add(d, name=f"{prefix}-{d.name}", tags=[prefix, "race"])
print(f"{prefix}: added {len(dirs)} in {time.time() - t0:.2f}s")
