"""Screenshots of `m2iv library serve` over any library, for docs/app/ (the browser test takes its own):

    python tests/_app_screenshots.py ROOT MODEL OUT --entry NAME --compose A,B [--skip-search]

It starts the CLI on a free loopback port, walks browse -> entry NAME -> try NAME on the first example of its
task (and the composition of A and B) -> a non-image upload -> search by example -> results, and saves one
PNG per page under OUT. Needs chromium and chromium-driver, like tests/test_app_browser.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_app_browser import CHROMIUM, DRIVER, FLAGS, ROOT, Page, _free_port  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--entry", required=True)
    p.add_argument("--compose", required=True, help="A,B")
    p.add_argument("--skip-search", action="store_true")
    args = p.parse_args()
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "m2iv.cli.main", "library", "serve", args.model, "--root",
                             args.root, "--port", str(port), "--benchmarks", str(ROOT / "benchmarks")],
                            env=env, stdout=subprocess.PIPE, text=True)
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    print(proc.stdout.readline().strip(), flush=True)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    page = Page(driver, f"http://127.0.0.1:{port}/", Path(args.out))
    page.shots.mkdir(parents=True, exist_ok=True)
    try:
        page.d.get(page.url)
        page.wait(lambda: args.entry in page.text("browse-table"), 120)
        page.screenshot("browse")
        page.row(args.entry).click()
        page.wait(lambda: page.has_image("entry-norms"), 120)
        page.screenshot("entry")
        page.click("entry-try")
        page.wait(lambda: page.css("#try-example input"))
        page.choose("try-example", "test")
        page.wait(lambda: page.has_image("try-image"))
        page.click("try-run")
        page.wait(lambda: "prompt tokens" in page.text("answer-steered"), 900)
        a, b = args.compose.split(",")
        page.choose("compose-a", a)
        page.choose("compose-b", b)
        page.click("compose-run")
        page.wait(lambda: "prompt tokens" in page.text("answer-composed"), 600)
        page.screenshot("try")
        with tempfile.TemporaryDirectory() as tmp:
            fake = Path(tmp) / "holiday.png"
            fake.write_text("this is text, not a picture")
            page.upload("try-upload", fake)
            page.wait(lambda: "is not an image" in page.text("try-status"))
        page.screenshot("try-errors")
        if not args.skip_search:
            page.tab("Search by example")
            page.choose("search-example", ":")
            page.wait(lambda: page.has_image("search-image"))
            page.click("search-run")
            page.wait(lambda: "Nearest:" in page.text("search-best"), 600)
            page.screenshot("search")
        page.tab("Results")
        page.wait(lambda: page.has_image("plot-tasks"), 120)
        page.screenshot("results")
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
