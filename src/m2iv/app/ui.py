"""The page: five tabs (Browse, Entry, Try it, Search by example, Results) and the events between them.

Element ids (`elem_id`) are stable so a browser test (and a user's bookmarklet) can find each part; every
event goes through `handlers.guard`, so an error is a line in the tab's status, never a stack trace.
"""

from __future__ import annotations

import gradio as gr

from m2iv.app import pages
from m2iv.app.handlers import Handlers, answers_placeholder, guard

CSS = """
.answer { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px; min-height: 120px; }
.status p { color: #b45309; font-weight: 600; }
"""


def _status(elem_id: str) -> gr.Markdown:
    return gr.Markdown("", elem_id=elem_id, elem_classes=["status"])


def _wire(event, fn, inputs, outputs):
    return event(guard(fn, len(outputs)), inputs=inputs, outputs=outputs)


def _browse_tab() -> dict:
    c: dict = {"status": _status("browse-status")}
    with gr.Row():
        c["text"] = gr.Textbox(label="Search", placeholder="words in names, tasks, methods, tags, descriptions",
                               elem_id="browse-text", scale=3)
        for key in ("task", "method", "tag", "model"):
            c[key] = gr.Dropdown(label=key.capitalize(), choices=[pages.ANY], value=pages.ANY,
                                 elem_id=f"browse-{key}", scale=1)
    c["count"] = gr.Markdown(elem_id="browse-count")
    c["table"] = gr.Dataframe(headers=pages.BROWSE_COLUMNS, column_widths=pages.BROWSE_WIDTHS, interactive=False,
                              wrap=True, elem_id="browse-table", max_height=520)
    with gr.Row():
        c["pick"] = gr.Dropdown(label="Open an entry (or click its row)", choices=[], elem_id="browse-pick", scale=4)
        c["open"] = gr.Button("Open", elem_id="browse-open", scale=1)
    return c


def _entry_tab() -> dict:
    c: dict = {"status": _status("entry-status")}
    c["pick"] = gr.Dropdown(label="Entry", choices=[], elem_id="entry-pick")
    c["summary"] = gr.Markdown(elem_id="entry-summary")
    with gr.Row():
        c["curve"] = gr.Plot(label="Training curve", show_label=False, elem_id="entry-curve")
        c["norms"] = gr.Plot(label="Vector norms", show_label=False, elem_id="entry-norms")
    c["curve_note"] = gr.Markdown(elem_id="entry-curve-note")
    c["scores"] = gr.Dataframe(headers=pages.SCORE_COLUMNS, interactive=False, wrap=True, elem_id="entry-scores",
                               label="Scores: the entry's own metrics, then zero-shot, ICL and its method on its task "
                                     "in the bench tables")
    with gr.Row():
        c["condition"] = gr.Markdown(elem_id="entry-condition")
        c["provenance"] = gr.Markdown(elem_id="entry-provenance")
    with gr.Accordion("Config (m2iv_config.json)", open=False):
        c["config"] = gr.Code(language="json", interactive=False, elem_id="entry-config")
    c["try"] = gr.Button("Try this entry", variant="primary", elem_id="entry-try")
    return c


def _image_inputs(prefix: str) -> dict:
    c: dict = {}
    c["example"] = gr.Dropdown(label="Pick an example image and question", choices=[], elem_id=f"{prefix}-example")
    c["upload"] = gr.File(label="…or upload an image", type="filepath", elem_id=f"{prefix}-upload", height=110)
    c["question"] = gr.Textbox(label="Question", elem_id=f"{prefix}-question")
    c["reference"] = gr.Markdown(elem_id=f"{prefix}-reference")
    return c


def _try_tab(allow_writes: bool) -> dict:
    c: dict = {"status": _status("try-status"), "path": gr.State(None)}
    with gr.Row():
        with gr.Column(scale=3):
            c["entry"] = gr.Dropdown(label="Entry", choices=[], elem_id="try-entry")
            c.update(_image_inputs("try"))
            c["shots"] = gr.Number(label="ICL shots", value=4, precision=0, minimum=0, maximum=64, elem_id="try-shots")
            c["run"] = gr.Button("Answer", variant="primary", elem_id="try-run")
        with gr.Column(scale=2):
            c["image"] = gr.Image(label="Image", type="pil", interactive=False, elem_id="try-image", height=260)
    zero, icl, steered = answers_placeholder()
    with gr.Row(equal_height=True):
        c["zero"] = gr.Markdown(zero, elem_id="answer-zero-shot", elem_classes=["answer"])
        c["icl"] = gr.Markdown(icl, elem_id="answer-icl", elem_classes=["answer"])
        c["steered"] = gr.Markdown(steered, elem_id="answer-steered", elem_classes=["answer"])
    gr.Markdown("#### Compose two entries (in memory; nothing is saved)")
    with gr.Row():
        c["a"] = gr.Dropdown(label="Entry A", choices=[], elem_id="compose-a", scale=3)
        c["wa"] = gr.Number(label="weight A", value=1.0, elem_id="compose-wa", scale=1)
        c["b"] = gr.Dropdown(label="Entry B", choices=[], elem_id="compose-b", scale=3)
        c["wb"] = gr.Number(label="weight B", value=1.0, elem_id="compose-wb", scale=1)
    c["compose"] = gr.Button("Compose and answer", elem_id="compose-run")
    c["composed"] = gr.Markdown(elem_id="answer-composed", elem_classes=["answer"])
    c["recipe"] = gr.Markdown(elem_id="compose-recipe")
    with gr.Row(visible=allow_writes):
        c["name"] = gr.Textbox(label="Save the composition as a library entry named", elem_id="compose-name")
        c["save"] = gr.Button("Save to the library", elem_id="compose-save")
    c["saved"] = gr.Markdown(elem_id="compose-saved")
    return c


def _search_tab() -> dict:
    c: dict = {"status": _status("search-status"), "path": gr.State(None)}
    with gr.Row():
        with gr.Column(scale=3):
            c.update(_image_inputs("search"))
            c["top"] = gr.Number(label="Entries to show", value=5, precision=0, minimum=1, maximum=50,
                                 elem_id="search-top")
            c["run"] = gr.Button("Find the nearest entries", variant="primary", elem_id="search-run")
        with gr.Column(scale=2):
            c["image"] = gr.Image(label="Image", type="pil", interactive=False, elem_id="search-image", height=260)
    c["best"] = gr.Markdown(elem_id="search-best")
    c["hits"] = gr.Dataframe(headers=pages.HIT_COLUMNS, interactive=False, elem_id="search-hits")
    return c


def _results_tab(h: Handlers) -> dict:
    c: dict = {"status": _status("results-status")}
    names = h.bench.names()
    c["table"] = gr.Dropdown(label="Bench table", choices=names, value=names[0] if names else None,
                             elem_id="results-table")
    c["meta"] = gr.Markdown(elem_id="results-meta")
    c["shots"] = gr.Plot(label="Accuracy against shots", show_label=False, elem_id="plot-shots")
    c["cost"] = gr.Plot(label="Accuracy against cost", show_label=False, elem_id="plot-cost")
    c["tasks"] = gr.Plot(label="Comparison per task", show_label=False, elem_id="plot-tasks")
    c["rows"] = gr.Dataframe(headers=pages.RESULT_COLUMNS, interactive=False, elem_id="results-rows", max_height=420)
    return c


def _image_events(h: Handlers, c: dict) -> None:
    """Example picked or file uploaded -> the image used (server-side state), its preview, the question."""
    image = [c["path"], c["image"]]
    _wire(c["example"].input, h.example_picked, [c["example"]], [c["status"], *image, c["question"], c["reference"]])
    c["upload"].upload(h.uploaded, inputs=[c["upload"]], outputs=[c["status"], *image, c["reference"]])
    c["upload"].clear(lambda: ("", None, None, ""), outputs=[c["status"], *image, c["reference"]])


def build(h: Handlers) -> gr.Blocks:
    with gr.Blocks(title="m2iv VLibrary", analytics_enabled=False, fill_width=True) as demo:
        header = gr.Markdown(elem_id="header")
        with gr.Tabs(selected="browse", elem_id="tabs") as tabs:
            with gr.Tab("Browse", id="browse", elem_id="tab-browse"):
                b = _browse_tab()
            with gr.Tab("Entry", id="entry", elem_id="tab-entry"):
                e = _entry_tab()
            with gr.Tab("Try it", id="try", elem_id="tab-try"):
                t = _try_tab(h.catalog.allow_writes)
            with gr.Tab("Search by example", id="search", elem_id="tab-search"):
                s = _search_tab()
            with gr.Tab("Results", id="results", elem_id="tab-results"):
                r = _results_tab(h)

        filters = [b["text"], b["task"], b["method"], b["tag"], b["model"]]
        browse_out = [b["status"], b["table"], b["count"], b["task"], b["method"], b["tag"], b["model"], b["pick"],
                      e["pick"], t["entry"], t["a"], t["b"]]
        entry_out = [e["status"], e["pick"], e["summary"], e["curve"], e["curve_note"], e["norms"], e["scores"],
                     e["condition"], e["provenance"], e["config"]]
        results_out = [r["status"], r["rows"], r["meta"], r["shots"], r["cost"], r["tasks"]]

        demo.load(h.header, outputs=[header])
        _wire(demo.load, h.browse, filters, browse_out)
        _wire(demo.load, h.results, [r["table"]], results_out)
        _wire(demo.load, lambda: (gr.Dropdown(choices=h.search_examples()),), [], [s["status"], s["example"]])
        _wire(b["text"].submit, h.browse, filters, browse_out)
        for dd in filters[1:]:
            _wire(dd.input, h.browse, filters, browse_out)
        _wire(b["table"].select, h.row_selected, [], [*entry_out, tabs])
        _wire(b["open"].click, h.open_entry, [b["pick"]], [*entry_out, tabs])
        _wire(e["pick"].input, h.entry, [e["pick"]], entry_out)
        _wire(e["try"].click, h.to_try, [e["pick"]], [e["status"], t["entry"], tabs])

        _wire(t["entry"].change, h.try_picked, [t["entry"]],
              [t["status"], t["example"], t["shots"], t["zero"], t["icl"], t["steered"]])
        _image_events(h, t)
        _wire(t["run"].click, h.answer, [t["entry"], t["path"], t["question"], t["shots"]],
              [t["status"], t["zero"], t["icl"], t["steered"], header])
        _wire(t["compose"].click, h.compose, [t["a"], t["wa"], t["b"], t["wb"], t["path"], t["question"]],
              [t["status"], t["composed"], t["recipe"], header])
        saved = _wire(t["save"].click, h.save_composition, [t["a"], t["wa"], t["b"], t["wb"], t["name"]],
                      [t["status"], t["saved"]])
        saved.then(guard(h.browse, len(browse_out)), inputs=filters, outputs=browse_out)  # the new entry listed

        _image_events(h, s)
        _wire(s["run"].click, h.search, [s["path"], s["question"], s["top"]],
              [s["status"], s["hits"], s["best"], header])
        _wire(r["table"].input, h.results, [r["table"]], results_out)
    return demo


__all__ = ["CSS", "build"]
