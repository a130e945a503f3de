"""`m2iv library serve`: the VLibrary in the browser (a local Gradio app).

One job per module:

    catalog.py   a library root read without writing anything; writes (--allow-writes) through the CLI's store
    results.py   the committed bench tables (benchmarks/**/*.json) as rows, and the ones an entry is scored in
    plots.py     every figure: training curve, vector norms, accuracy against shots and cost, per-task bars
    answers.py   the model session: zero-shot, N-shot ICL, steered and composed answers, search by example
    pages.py     what each page shows, as text and table rows (no Gradio: testable on its own)
    handlers.py  what each event does (every error becomes a message on the page, never a stack trace)
    ui.py        the Gradio layout: five tabs with stable element ids, and the events between them
    server.py    start-up: loopback by default, no telemetry, one line naming the address
"""
