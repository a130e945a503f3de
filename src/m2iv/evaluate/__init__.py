"""Evaluation: the runner, and metrics ported from the official evaluation code (tasks are in m2iv.data.tasks)."""
