"""Evaluation: tasks, the runner, and metrics ported from the official evaluation code."""
