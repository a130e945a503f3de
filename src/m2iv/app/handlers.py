"""What each button, picker and upload does: one method per event, returning the new values of its outputs.

Every method's first output is its page's status line. `guard` turns any error into that line (an M2IVError
as its one-line cause and fix; anything else as its type and message, the traceback going to the server's
console only) and leaves the other outputs as they were, so the page never shows a stack trace.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable

import gradio as gr

from m2iv.app import pages, plots
from m2iv.app.answers import DEFAULT_SHOTS, Answer, Session, check_image, compose_answer, search_example, try_entry
from m2iv.app.catalog import Catalog
from m2iv.app.results import Benchmarks
from m2iv.data.images import open_image
from m2iv.errors import M2IVError
from m2iv.library.compose import Term


def error_line(e: BaseException) -> str:
    if isinstance(e, M2IVError):
        return f"⚠️ {e}"
    return f"⚠️ Unexpected error: {type(e).__name__}: {' '.join(str(e).split())} (details in the server's console)"


def guard(fn: Callable, n_outputs: int) -> Callable:
    """`fn` with its errors shown in the status line (its first output) and its other outputs left alone."""

    @functools.wraps(fn)
    def run(*args):
        try:
            return ("", *fn(*args))
        except Exception as e:  # noqa: BLE001 - every failure becomes a message on the page
            if not isinstance(e, M2IVError):
                traceback.print_exc(file=sys.stderr)
            return (error_line(e), *[gr.skip() for _ in range(n_outputs - 1)])

    return run


class Handlers:
    """The app's events over one catalog, model session and benchmarks folder."""

    def __init__(self, catalog: Catalog, session: Session, bench: Benchmarks) -> None:
        self.catalog, self.session, self.bench = catalog, session, bench

    # -- header and browse ------------------------------------------------------------------------
    def header(self) -> str:
        try:
            model = self.session.spec + (" (loaded)" if self.session.loaded else " (loads on first use)")
        except M2IVError:
            model = "none (pass MODEL)"
        writes = "writes allowed" if self.catalog.allow_writes else "read-only"
        return (f"## m2iv VLibrary\n\nLibrary `{self.catalog.root}` · model `{model}` · {writes}")

    def browse(self, text: str, task: str, method: str, tag: str, model: str) -> tuple:
        """Table rows, count line, filter choices and the entry pickers' choices."""
        everything = self.catalog.entries()
        shown = pages.filter_entries(self.catalog, text, task, method, tag, model)
        count = f"{len(shown)} of {len(everything)} entries"
        if self.catalog.problems:
            count += " · skipped damaged rows: " + "; ".join(self.catalog.problems)
        choices = pages.filter_choices(everything)
        every = pages.entry_choices(everything)
        return (pages.browse_rows(shown), count,
                *[gr.Dropdown(choices=choices[k], value=v if v in choices[k] else pages.ANY)
                  for k, v in (("task", task), ("method", method), ("tag", tag), ("model", model))],
                gr.Dropdown(choices=pages.entry_choices(shown)), gr.Dropdown(choices=every),
                gr.Dropdown(choices=every), gr.Dropdown(choices=every), gr.Dropdown(choices=every))

    def row_selected(self, evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        if not row:
            raise M2IVError("click a row of the table to open its entry")
        return (*self.entry(str(row[-1])), gr.Tabs(selected="entry"))

    def open_entry(self, ref: str | None) -> tuple:
        if not ref:
            raise M2IVError("pick an entry to open")
        return (*self.entry(ref), gr.Tabs(selected="entry"))

    # -- an entry's page --------------------------------------------------------------------------
    def entry(self, ref: str | None) -> tuple:
        """Picker value, summary, training curve, its note, norms plot, scores, condition, provenance, config."""
        if not ref:
            raise M2IVError("pick an entry")
        entry = self.catalog.get(ref)
        try:
            curve, note = plots.training_curve(self.catalog.train_log(entry), f"{entry.name}: training"), ""
        except M2IVError as e:  # the rest of the page is still worth showing
            curve, note = None, f"⚠️ {e}"
        if curve is None and not note:
            note = ("_No training curve: this entry was composed, not trained._" if entry.method == "composed" else
                    "_No training curve: the library kept no training log for this entry (it is kept when `m2iv "
                    "library add` finds the trainer's `<dir>.train/train_log.jsonl`)._")
        vectors, _ = self.catalog.load(entry.id)
        norms = plots.vector_norms(vectors, f"{entry.name}: norm per layer and branch")
        return (gr.update(value=entry.id), pages.entry_summary(entry), curve, note, norms,
                pages.score_rows(entry, self.bench), pages.condition_md(entry), pages.provenance_md(entry),
                json.dumps(entry.config, indent=2, sort_keys=True))

    def to_try(self, ref: str | None) -> tuple:
        if not ref:
            raise M2IVError("open an entry first")
        return (gr.update(value=ref), gr.Tabs(selected="try"))

    # -- try it -----------------------------------------------------------------------------------
    def try_picked(self, ref: str | None) -> tuple:
        """Its task's examples, its default ICL shots (the teacher's, else 4), and the answer boxes emptied."""
        if not ref:
            return (gr.Dropdown(choices=[], value=None), gr.skip(), *answers_placeholder())
        entry = self.catalog.get(ref)
        examples = self.session.examples(entry.task)
        choices = [(f"{s.id}: {s.question or '(no question)'}", f"{entry.task}#{i}") for i, s in enumerate(examples)]
        return (gr.Dropdown(choices=choices, value=None), entry.shots or DEFAULT_SHOTS, *answers_placeholder())

    def example_picked(self, key: str | None) -> tuple:
        """(image path state, preview, question, its reference answers) of a task example."""
        if not key:
            return (gr.skip(), gr.skip(), gr.skip(), gr.skip())
        task, _, i = key.rpartition("#")
        examples = self.session.examples(task or None)
        if not i.isdigit() or int(i) >= len(examples):
            raise M2IVError("that example is no longer listed; pick another")
        sample = examples[int(i)]
        path = check_image(sample.images[0]) if sample.images else None
        answers = list(dict.fromkeys(sample.answers))[:5]
        reference = f"Reference answer ({task}): " + ", ".join(f"**{pages.escape(a)}**" for a in answers) if answers \
            else ""
        return (path, open_image(path) if path else None, sample.question, reference)

    def uploaded(self, path: str | None) -> tuple:
        """(status, image path state, preview, no reference answer) of an upload: a file that is not an image is
        named in the status and clears the image, so no later answer uses an earlier one by mistake."""
        if not path:
            return ("", None, None, "")
        try:
            good = check_image(path)
            return ("", good, open_image(good) if good else None, "")
        except Exception as e:  # noqa: BLE001 - shown on the page
            return (error_line(e), None, None, "")

    def answer(self, ref: str | None, image: str | None, question: str, shots) -> tuple:
        if not ref:
            raise M2IVError("pick an entry to try")
        answers = try_entry(self.session, ref, image, question, int(shots or 0))
        return (*[pages.answer_md(a) for a in answers], self.header())

    def compose(self, a: str | None, wa, b: str | None, wb, image: str | None, question: str) -> tuple:
        terms = [(ref, float(w if w is not None else 1.0)) for ref, w in ((a, wa), (b, wb)) if ref]
        answer, provenance = compose_answer(self.session, terms, image, question)
        return (pages.answer_md(answer), f"Recipe: `{provenance['expression']}` (not saved)", self.header())

    def save_composition(self, a: str | None, wa, b: str | None, wb, name: str) -> tuple:
        """Store the composition through the CLI's store (`m2iv library compose`), with --allow-writes only."""
        terms = [Term(float(w if w is not None else 1.0), ref) for ref, w in ((a, wa), (b, wb)) if ref]
        if not terms:
            raise M2IVError("pick at least one entry to compose")
        if not (name or "").strip():
            raise M2IVError("give the new entry a name")
        with self.catalog.writer() as lib:
            entry = lib.compose(name.strip(), terms)
        return (f"Saved `library:{entry.name}` ({entry.id}) = `{entry.provenance['expression']}`",)

    # -- search by example ------------------------------------------------------------------------
    def search_examples(self) -> list[tuple[str, str]]:
        """Examples from the tasks of the entries search can rank (those with a prototype)."""
        tasks = dict.fromkeys(e.task for e in self.catalog.entries() if e.prototype is not None and e.task)
        out = []
        for task in tasks:
            out += [(f"{task}: {s.question or '(no question)'}", f"{task}#{i}")
                    for i, s in enumerate(self.session.examples(task)[:3])]
        return out

    def search(self, image: str | None, question: str, top) -> tuple:
        hits = search_example(self.session, image, question, int(top or 5))
        if not hits:
            return ([], "No entry to rank.", self.header())
        best = hits[0]
        return (pages.hit_rows(hits), f"Nearest: **{best.entry.name}** (similarity {best.score:.3f})", self.header())

    # -- results ----------------------------------------------------------------------------------
    def results(self, name: str | None) -> tuple:
        if not name:
            where = self.bench.root or "no benchmarks folder (pass --benchmarks DIR)"
            raise M2IVError(f"no bench tables found under {where}")
        rows = self.bench.rows(name)
        short = name.removesuffix(".json")
        return (pages.result_rows(rows), f"`benchmarks/{name}`: {len(rows)} rows",
                plots.accuracy_vs_shots(rows, f"{short}: score against shots"),
                plots.accuracy_vs_cost(rows, f"{short}: score against prompt length"),
                plots.per_task(rows, f"{short}: per task"))


def answers_placeholder() -> list[str]:
    return [pages.answer_md(Answer(way=w, text="", note="press Answer")) for w in ("zero-shot", "ICL", "steered")]


__all__ = ["Handlers", "answers_placeholder", "error_line", "guard"]
