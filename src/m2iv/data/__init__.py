"""Datasets, demonstration selection and prompts."""
