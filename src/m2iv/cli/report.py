"""`m2iv report RESULTS... --out DIR`: Markdown tables and PNG plots from results files."""

from __future__ import annotations

import argparse

from m2iv.cli.common import check_out


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="Markdown report with tables and plots from results files",
                       epilog="example: m2iv report benchmarks/sandbox_suite.json runs/*/summary.json --out report/")
    p.add_argument("results", nargs="+", help="summary.json files of `m2iv eval` runs, `m2iv bench` JSON tables, "
                   "train_log.jsonl files or vector directories (for loss curves)")
    p.add_argument("--out", required=True, help="folder for report.md and the PNG plots")
    p.add_argument("--title", default="m2iv report", help="the report's heading (default 'm2iv report')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from m2iv.evaluate.report import build_report

    check_out(args.out, folder=True)
    path = build_report(args.results, args.out, args.title)
    pngs = sorted(p.name for p in path.parent.glob("*.png"))
    print(f"wrote {path} with {', '.join(pngs) or 'no plots'}")
    return 0
