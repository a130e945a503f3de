"""The sandbox's task suites on easy-vqa images: suite.py (invented-word mappings), suite_v2.py (four more),
applications.py (styles, safety, grounding); registration.py puts a task table into the registries. Each suite's
`register(datasets, tasks, task_cls)` is an `m2iv.tasks` entry point (pyproject.toml), looked up on first use."""
