"""Datasets, tasks (data/tasks.py), demonstration selection and prompts."""
