"""The public Python API's own room: the whole path (tasks from Python data, training, evaluation, a steered
model) in a few calls; `m2iv/__init__.py` re-exports it."""
