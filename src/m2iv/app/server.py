"""Starting the page: `m2iv library serve [MODEL] [--root DIR] [--host H] [--port N] [--allow-writes]`.

It listens on the loopback (127.0.0.1) unless --host says otherwise, and then says in one line that anyone who
can reach the address can use the page. Nothing leaves the machine: Gradio's telemetry is off, the theme uses
the system's fonts (no font CDN), no share link, no server-side rendering process. Uploads are capped at
MAX_UPLOAD. Opening the library writes nothing (`catalog.Catalog`); the model loads on the first answer or
search, so the page is up in seconds whatever the model.
"""

from __future__ import annotations

import ipaddress
import os
import sys

from m2iv.errors import M2IVError

MAX_UPLOAD = "64mb"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _environment(host: str) -> None:
    """No telemetry; Gradio's own reachability check of the page must not go through a proxy."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    no_proxy = [x for x in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if x]
    for name in (*LOOPBACK, host):
        if name not in no_proxy:
            no_proxy.append(name)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(no_proxy)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _gradio():
    try:
        import gradio as gr
    except ImportError:
        raise M2IVError("`m2iv library serve` needs Gradio; install it with `pip install 'm2iv[app]'` (or `make "
                        "setup` in a checkout)") from None
    return gr


def build_app(root=None, model: str | None = None, allow_writes: bool = False, benchmarks=None,
              data_root: str | None = None, dtype: str = "float32", device: str = "cpu", loader=None):
    """The page's Blocks, not yet listening (tests drive its handlers directly)."""
    _gradio()
    from m2iv.app.answers import Session
    from m2iv.app.catalog import Catalog
    from m2iv.app.handlers import Handlers
    from m2iv.app.results import Benchmarks, default_dir
    from m2iv.app.ui import build

    catalog = Catalog(root, allow_writes=allow_writes)
    session = Session(catalog, model, dtype=dtype, device=device, data_root=data_root, loader=loader)
    return build(Handlers(catalog, session, Benchmarks(benchmarks or default_dir())))


def serve(root=None, model: str | None = None, host: str = "127.0.0.1", port: int | None = None,
          allow_writes: bool = False, benchmarks=None, data_root: str | None = None, dtype: str = "float32",
          device: str = "cpu", block: bool = True):
    """Start the page and (with `block`) serve until Ctrl-C; returns the running Blocks."""
    _environment(host)
    gr = _gradio()
    from m2iv.app.ui import CSS

    demo = build_app(root, model, allow_writes, benchmarks, data_root, dtype, device)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    try:
        demo.queue(default_concurrency_limit=2).launch(
            server_name=host, server_port=port, prevent_thread_lock=True, quiet=True, show_error=False, share=False,
            inbrowser=False, ssr_mode=False, mcp_server=False, max_file_size=MAX_UPLOAD, theme=theme, css=CSS)
    except OSError as e:
        raise M2IVError(f"cannot listen on {host}:{port or 'a port from 7860'} ({' '.join(str(e).split())[:160]}); "
                        "choose another --port") from None
    from m2iv.library.entry import default_root

    mode = "writes allowed" if allow_writes else "read-only"
    print(f"m2iv library serve: {demo.local_url} (library {root or default_root()}, {mode}; Ctrl-C stops)",
          flush=True)
    if not is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this address can use the page"
              + (" and write to the library" if allow_writes else ""), file=sys.stderr, flush=True)
    if block:
        demo.block_thread()
    return demo


__all__ = ["MAX_UPLOAD", "build_app", "is_loopback", "serve"]
