"""`m2iv library serve` in headless Chromium (issue 24 acceptance): the CLI starts the page on a free loopback port
with tiny:idefics3 and a small library (tests/_app_library.py), and Selenium drives it through browse -> entry ->
try -> search by example -> results, asserting on what each page shows and saving a screenshot of each
(to $M2IV_APP_SCREENSHOTS when set: `M2IV_APP_SCREENSHOTS=docs/app pytest tests/test_app_browser.py` refreshes
the README's). Needs Debian's `chromium` and `chromium-driver`; skipped where they are absent, except under CI
(.ci/run installs them), where their absence fails the test."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("M2IV_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("M2IV_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1700")
HAVE_CHROMIUM = bool(shutil.which(CHROMIUM) and shutil.which(DRIVER))

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM and not os.environ.get("CI"),
                                reason="needs chromium and chromium-driver (apt-get install chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@contextmanager
def _serving(root: Path, tmp: Path, model: str = "tiny:idefics3"):
    """`m2iv library serve` on a free loopback port (its URL), stopped afterwards."""
    env = {**os.environ, "M2IV_HOME": str(tmp / "home"), "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "m2iv.cli.main", "library", "serve", model, "--root", str(root),
                             "--port", str(port), "--benchmarks", str(ROOT / "benchmarks")],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # the one line naming the address, once the page is up
        assert line.startswith(f"m2iv library serve: http://127.0.0.1:{port}/"), (line, proc.stderr.read()[-3000:])
        assert "read-only" in line
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, library root, its files before serving): the CLI serving a fresh library."""
    sys.path.insert(0, str(ROOT / "tests"))
    import _app_library

    tmp = tmp_path_factory.mktemp("app")
    with pytest.MonkeyPatch.context() as mp:  # the teacher cache of the library's training: not the user's
        mp.setenv("M2IV_HOME", str(tmp / "home"))
        root = _app_library.build(tmp / "lib", tmp / "work")
    before = _files(root)
    with _serving(root, tmp, _app_library.MODEL) as url:
        yield url, root, before


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
        driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    shots = Path(os.environ.get("M2IV_APP_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        yield Page(driver, server[0], shots)
    finally:
        driver.quit()


class Page:
    """The few Selenium moves the tests need, on Gradio's element ids."""

    def __init__(self, driver, url: str, shots: Path) -> None:
        self.d, self.url, self.shots = driver, url, shots

    def open(self) -> None:
        self.d.get(self.url)
        self.wait(lambda: "colour-m2iv" in self.text("browse-table"), 120)

    def wait(self, ok, timeout: float = 180):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.d, timeout).until(lambda _: ok())

    def el(self, elem_id: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.ID, elem_id)

    def css(self, selector: str):
        from selenium.webdriver.common.by import By

        return [e for e in self.d.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed()]

    def text(self, elem_id: str) -> str:
        return self.el(elem_id).text

    def click(self, elem_id: str) -> None:
        self.el(elem_id).click()

    def tab(self, name: str) -> None:
        [b for b in self.css("button[role=tab]") if b.text.strip() == name][0].click()

    def choose(self, elem_id: str, label: str) -> None:
        """Pick the option of a Gradio dropdown whose label contains `label`."""
        from selenium.common.exceptions import StaleElementReferenceException

        for _ in range(5):
            try:
                self.css(f"#{elem_id} input")[0].click()
                option = self.wait(lambda: [o for o in self.css(f"#{elem_id} [role=option]") if label in o.text], 20)
                option[0].click()
                self.wait(lambda: not self.css(f"#{elem_id} [role=option]"), 10)
                return
            except StaleElementReferenceException:
                time.sleep(0.3)
        raise AssertionError(f"could not pick {label!r} in #{elem_id}")

    def type(self, elem_id: str, text: str, enter: bool = False) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.css(f"#{elem_id} textarea, #{elem_id} input")[0]
        box.send_keys(Keys.CONTROL + "a", Keys.DELETE)  # as a user would: clear() sends no input event
        box.send_keys(text + (Keys.ENTER if enter else Keys.TAB))

    def upload(self, elem_id: str, path: Path) -> None:
        from selenium.webdriver.common.by import By

        self.d.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))

    def has_image(self, elem_id: str) -> bool:
        return bool(self.css(f"#{elem_id} img"))

    def row(self, name: str):
        cells = [c for c in self.css("#browse-table [role=gridcell], #browse-table td") if c.text.strip() == name]
        return cells[0]

    def screenshot(self, name: str) -> Path:
        time.sleep(0.5)  # plots and images finish drawing
        path = self.shots / f"{name}.png"
        assert self.d.save_screenshot(str(path)), path
        return path

    def no_traceback(self) -> None:
        assert "Traceback" not in self.d.page_source and 'File "' not in self.d.page_source


def _tokens(card: str) -> int:
    return int(re.search(r"(\d+) prompt tokens", card).group(1))


def test_browse_lists_every_entry_with_filters_and_text_search(page):
    page.open()
    table = page.text("browse-table")
    for name, model in (("colour-m2iv", "tiny:idefics3"), ("shape-random", "tiny:idefics3"), ("mix", "tiny:idefics3"),
                        ("other-model", "tiny:llava")):
        assert name in table and model in table
    assert "4 of 4 entries" in page.text("browse-count") and "composed" in table and "colour, trained" in table
    assert "(loads on first use)" in page.text("header") and "read-only" in page.text("header")
    page.screenshot("browse")
    page.type("browse-text", "control", enter=True)  # a word of shape-random's description only
    page.wait(lambda: "1 of 4 entries" in page.text("browse-count"))
    assert "shape-random" in page.text("browse-table") and "colour-m2iv" not in page.text("browse-table")
    page.type("browse-text", "", enter=True)
    page.choose("browse-method", "composed")
    page.wait(lambda: "1 of 4 entries" in page.text("browse-count"))
    assert "mix" in page.text("browse-table") and "shape-random" not in page.text("browse-table")


def test_an_entrys_page_shows_config_curve_norms_scores_and_recipe(page):
    page.open()
    page.row("colour-m2iv").click()
    page.wait(lambda: "colour-m2iv" in page.text("entry-summary"))
    summary = page.text("entry-summary")
    assert "easy-vqa" in summary and "tiny:idefics3" in summary and "colour, trained" in summary
    page.wait(lambda: page.has_image("entry-curve") and page.has_image("entry-norms"))
    assert page.text("entry-curve-note") == ""  # the training log was kept, so the curve is drawn
    assert "val_teacher_forced_acc" in page.text("entry-scores") and "entry metrics" in page.text("entry-scores")
    assert "Trained on easy-vqa" in page.text("entry-provenance") and "none" in page.text("entry-condition")
    page.screenshot("entry")
    page.choose("entry-pick", "mix")
    page.wait(lambda: "0.5*colour-m2iv + 0.5*shape-random" in page.text("entry-provenance"))
    assert "composed, not trained" in page.text("entry-curve-note") and page.has_image("entry-norms")


def test_try_answers_zero_shot_icl_steered_and_composed_side_by_side(page):
    page.open()
    page.row("colour-m2iv").click()
    page.wait(lambda: "colour-m2iv" in page.text("entry-summary"))
    page.click("entry-try")
    page.wait(lambda: page.css("#try-run"))
    page.wait(lambda: page.css("#try-shots input")[0].get_attribute("value") == "2")  # the entry's teacher shots
    page.choose("try-example", "test")
    page.wait(lambda: page.has_image("try-image"))
    assert page.css("#try-question textarea, #try-question input")[0].get_attribute("value")
    assert page.text("try-reference").startswith("Reference answer (easy-vqa): ")
    page.click("try-run")
    page.wait(lambda: "prompt tokens" in page.text("answer-steered"), 180)
    zero, icl, steered = (page.text(i) for i in ("answer-zero-shot", "answer-icl", "answer-steered"))
    assert zero.startswith("zero-shot") and icl.startswith("2-shot ICL") and steered.startswith("steered by colour")
    assert all(" ms · " in card for card in (zero, icl, steered))
    assert _tokens(icl) > _tokens(zero) == _tokens(steered)
    page.choose("compose-a", "colour-m2iv")
    page.choose("compose-b", "shape-random")
    page.type("compose-wb", "-0.5")
    page.click("compose-run")
    page.wait(lambda: "prompt tokens" in page.text("answer-composed"))
    assert "composed: 1.0*colour-m2iv - 0.5*shape-random" in page.text("answer-composed")
    assert "(not saved)" in page.text("compose-recipe") and not page.css("#compose-save")  # read-only page
    page.screenshot("try")
    page.no_traceback()


def test_bad_input_is_a_message_on_the_page(page, tmp_path):
    page.open()
    page.tab("Try it")
    fake = tmp_path / "holiday.png"
    fake.write_text("this is text, not a picture")
    page.upload("try-upload", fake)
    page.wait(lambda: "holiday.png is not an image" in page.text("try-status"))
    page.choose("try-entry", "other-model")
    page.type("try-question", "What colour is it?")
    page.click("try-run")
    page.wait(lambda: "other-model is for tiny:llava" in page.text("try-status"))
    assert "m2iv library serve tiny:llava" in page.text("try-status")
    page.screenshot("try-errors")
    page.no_traceback()


def test_search_by_example_ranks_the_entries_with_prototypes(page, tmp_path):
    from conftest import image

    page.open()
    page.tab("Search by example")
    picture = tmp_path / "shape.png"
    image(7, (64, 64)).save(picture)
    page.upload("search-upload", picture)
    page.wait(lambda: page.has_image("search-image"))
    page.type("search-question", "What colour is the shape?")
    page.click("search-run")
    page.wait(lambda: "Nearest:" in page.text("search-best"), 120)
    hits = page.text("search-hits")
    assert "colour-m2iv" in hits and "shape-random" in hits
    assert "other-model" not in hits and "mix" not in hits  # another model's; no prototype
    assert re.search(r"0\.\d{3}", hits)
    page.screenshot("search")


def test_results_render_the_committed_bench_tables(page, server):
    page.open()
    page.tab("Results")
    page.wait(lambda: "compare/sandbox.json" in page.text("results-meta") and page.has_image("plot-tasks"))
    committed = json.loads((ROOT / "benchmarks" / "compare" / "sandbox.json").read_text())["rows"]
    assert f"{len(committed)} rows" in page.text("results-meta")
    assert page.has_image("plot-shots") and page.has_image("plot-cost")
    assert "hificl" in page.text("results-rows") and "zero-shot" in page.text("results-rows")
    page.screenshot("results")
    page.choose("results-table", "sandbox_suite.json")
    page.wait(lambda: "sandbox_suite.json" in page.text("results-meta"))
    assert "30 rows" in page.text("results-meta")
    page.no_traceback()
    _, root, before = server
    assert _files(root) == before  # serving read-only wrote nothing into the library


def test_a_missing_library_is_a_message_on_the_page(page, tmp_path):
    with _serving(tmp_path / "no-library-here", tmp_path) as url:
        page.d.get(url)
        page.wait(lambda: "no library at" in page.text("browse-status"), 60)
        assert "--root" in page.text("browse-status") and "0 of" not in page.text("browse-count")
        page.no_traceback()
