"""Run by test_train.py under torchrun: train on 2 CPU processes (gloo) and dump each rank's vectors."""

import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny, train_saved, write_samples  # noqa: E402
from m2iv.data.tasks import Task  # noqa: E402
from m2iv.dist import state  # noqa: E402
from m2iv.methods import M2IV  # noqa: E402
from m2iv.train.config import TeacherConfig, TrainConfig  # noqa: E402

out = Path(sys.argv[1])
st = state()
root = out / f"data{st.process_index}"
splits = {"train": write_samples(root, 12, prefix="q"), "support": write_samples(root, 8, prefix="s"), "test": []}
lm = tiny("idefics3")
cfg = TrainConfig(steps=6, batch_size=4, val_every=0, checkpoint_every=3, teacher=TeacherConfig(shots=2, topk=8))
task = Task("fixture", "jsonl", "vqa_accuracy", "test", "test")
vec, _ = train_saved(lm, task, splits, M2IV().make_vectors(lm), cfg, out / "v", show_progress=False)
save_file({k: v.detach().contiguous() for k, v in vec.params.items()}, str(out / f"rank{st.process_index}.safetensors"))
