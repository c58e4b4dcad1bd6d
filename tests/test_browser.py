"""The quick start in a real browser: JupyterLab, headless Debian chromium, live dashboard.

JupyterLab serves a temporary copy of notebooks/ (its config, runtime and IPython state in
the test's directory too); its kernels reach a server this test owns through $IBSTREAM_URL.
Playwright opens 01_quickstart.ipynb and runs it in two steps, as a researcher would:

1. the cells above the collection (server, dashboard with all six panels), then, with the
   kernel free: every figure of the dashboard holds data (bqplot marks with data in its
   SVG), the marks change between two looks (the profile's and the footprint's each on
   their own) and the status line counts ticks, more and more;
2. the rest (collect, classify, summary, bars, clean up): the dashboard keeps moving while
   the collection awaits, every cell runs without a traceback, and the clean-up removes the
   dashboard from the page.

Screenshots go to the test's directory (paths printed); with IBSTREAM_UPDATE_SCREENSHOT=1
the dashboard's is also copied to docs/dashboard.png for the README, after at least
`README_TICKS` ticks arrived, so its plots show a stretch of market.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from ibstream.server.launch import ensure_server
from tests.client_fixtures import free_port
from tests.lab import chromium_path, launch_chromium, running_lab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "01_quickstart.ipynb"
COLLECT_SECONDS = 20  # the quick start's collection: time to watch the dashboard during it
LOOK = 45_000  # ms any expected change on the page may take (a busy 2-core machine)
README_TICKS = 1500
VIEWPORT = {"width": 1400, "height": 2600}  # the whole dashboard fits, footprint too
FIGURES = 6  # price, volume per bar, cumulative delta, buy %, profile, footprint
DEPTH = ("profile", "footprint")  # the panels of volume per price level
TRACEBACK = ".jp-OutputArea-output:has-text('Traceback')"  # a cell raised

# Data-bearing bqplot elements of each figure of the dashboard: bars with a height, scatter
# dots, lines through 3 or more points (a constant reference line has 2), footprint cells
# with a colour and their text labels; with a fingerprint of their geometry to see them
# change, the figure's panel (its ibstream-* class) and the labels of the time axis (the
# one labelled "time ...") in the order they stand from left to right.
MARKS_JS = """
dash => Array.from(dash.querySelectorAll('.bqplot.figure')).map(fig => {
  const plot = fig.querySelector('svg.svg-figure');
  const inside = sel => Array.from(plot ? plot.querySelectorAll('[clip-path] ' + sel) : []);
  const shapes = [
    ...inside('rect.bar').filter(r => parseFloat(r.getAttribute('height')) > 0),
    ...inside('path.dot'),
    ...inside('path.line').filter(p => (p.getAttribute('d') || '').split('L').length >= 3),
    ...inside('rect.heatmapcell').filter(r => !['', 'transparent'].includes(r.style.fill)),
    ...inside('text.label'),
  ];
  const geometry = e => ['d', 'transform', 'x', 'y', 'height', 'width']
    .map(a => e.getAttribute(a))
    .concat([e.style.fill, e.tagName === 'text' ? e.textContent : '',
             e.parentNode.getAttribute('transform')]);
  const panels = ['price', 'volume', 'delta', 'buy-pct', 'profile', 'footprint'];
  const label = Array.from(fig.querySelectorAll('text.axislabel'))
    .find(t => t.textContent.startsWith('time'));
  const ticks = label ? Array.from(label.parentNode.querySelectorAll('g.tick')) : [];
  const at = t => parseFloat((t.getAttribute('transform') || '').replace('translate(', ''));
  return {
    title: (fig.querySelector('.mainheading') || {}).textContent || '',
    panel: panels.find(p => fig.classList.contains('ibstream-' + p)) || '',
    marks: shapes.length,
    geometry: JSON.stringify(shapes.map(geometry)),
    times: ticks.sort((a, b) => at(a) - at(b)).map(t => t.textContent),
  };
})
"""
HAS_DATA_JS = f"dash => ({MARKS_JS})(dash).filter(f => f.marks > 0).length >= {FIGURES}"
GEOMETRY_JS = f"(dash => ({MARKS_JS})(dash).map(f => f.geometry).join('\\n'))"
PANEL_JS = f"((dash, panel) => ({MARKS_JS})(dash).filter(f => f.panel === panel)[0])"
TICKS_JS = """
() => {
  const status = document.querySelector('.ibstream-dashboard .ibstream-status');
  const found = status && status.innerText.match(/ticks (\\d+)/);
  return found ? Number(found[1]) : -1;
}
"""


@pytest.fixture
def tick_server(tmp_path) -> str:
    """An ibstream server on the simulator, on a free port, stopped after the test."""
    url = f"http://127.0.0.1:{free_port()}"
    server = ensure_server(url, demo=True, log_file=tmp_path / "server.log")
    yield url
    server.stop()


def test_quickstart_dashboard_in_jupyterlab(tick_server, tmp_path):
    executable = chromium_path()  # fails here, with what to install, before anything starts
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_*"))
    kernel_env = {"IBSTREAM_URL": tick_server, "IBSTREAM_QUICKSTART_SECONDS": str(COLLECT_SECONDS)}
    with running_lab(root, tmp_path / "jupyter", kernel_env) as lab:
        with launch_chromium(executable) as browser:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(LOOK)
            keep_console(page, tmp_path / "browser-console.log")
            try:
                run_quickstart(page, lab.page_url(f"lab/tree/{QUICKSTART}"), tick_server, tmp_path)
            except BaseException:
                page.screenshot(path=tmp_path / "failure.png")
                print(f"\nthe page when the test failed: {tmp_path / 'failure.png'}")
                raise


def run_quickstart(page, url: str, server: str, tmp_path: Path) -> None:
    """The two steps of the module doc."""
    open_notebook(page, url)
    collect_cell = page.locator(".jp-CodeCell", has_text="await client.collect")
    collect_cell.locator(".jp-InputPrompt").click()  # select it (command mode)

    run_menu(page, "Run All Above Selected Cell")  # server, dashboard
    dash = page.locator(".ibstream-dashboard")
    page.wait_for_selector(f".ibstream-dashboard, {TRACEBACK}")
    tracebacks = page.locator(TRACEBACK)
    assert tracebacks.count() == 0, tracebacks.all_inner_texts()
    figures = wait_for_data(page, dash)
    assert sorted(f["panel"] for f in figures if f["panel"] in DEPTH) == sorted(DEPTH), figures
    wait_for_change(page, dash, figures)
    for panel in DEPTH:
        panel_changes(page, dash, panel, figures)
    ticks = page.evaluate(TICKS_JS)
    assert ticks > 0, page.inner_text(".ibstream-status")
    await_js(page, f"() => ({TICKS_JS})() > {ticks}", None, f"the ticks count stayed at {ticks}")
    shoot(page, dash, tmp_path)

    run_menu(page, "Run Selected Cell and All Below")  # collect ... clean up
    running = collect_cell.locator(".jp-InputPrompt", has_text="[*]")
    running.wait_for()
    moving_while_collecting(page, dash, running)
    check_finished(page, f"left {server} running")
    dash.wait_for(state="detached")  # dash.close() took it off the page


def open_notebook(page, url: str) -> None:
    """Open the notebook and wait for its kernel; a kernel picker, if one shows, is accepted."""
    page.goto(url)
    idle = ".jp-Notebook-ExecutionIndicator[data-status='idle']"
    page.wait_for_selector(f".jp-Dialog, {idle}", timeout=2 * LOOK)
    if page.locator(".jp-Dialog").count():
        page.locator(".jp-Dialog .jp-mod-accept").click()
        page.wait_for_selector(idle, timeout=2 * LOOK)
    page.keyboard.press("Control+b")  # hide the file browser: wider plots


def keep_console(page, path: Path) -> None:
    """Write the page's console messages and uncaught errors to `path` (for a failure)."""

    def write(line: str) -> None:
        with open(path, "a") as sink:
            print(line, file=sink)

    page.on("console", lambda message: write(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: write(f"page error: {error}"))


def check_finished(page, last_output: str) -> None:
    """Await the last cell's output; then every code cell ran, none raised, the collection
    found ticks and every widget displayed."""
    done = page.locator(".jp-OutputArea-output", has_text=last_output)
    done.wait_for(timeout=COLLECT_SECONDS * 1000 + 2 * LOOK)
    tracebacks = page.locator(TRACEBACK)
    assert tracebacks.count() == 0, tracebacks.all_inner_texts()
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert all(re.fullmatch(r"\[\d+\]:", p.strip()) for p in prompts), prompts
    text = page.locator(".jp-Notebook").inner_text()
    found = re.search(r"collected (\d+) ticks", text)
    assert found and int(found.group(1)) > 0, "the collection found no ticks"
    assert "Error displaying widget" not in text


def run_menu(page, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
    page.get_by_role("menuitem", name=item, exact=True).click()


def wait_for_data(page, dash) -> list[dict]:
    """Every figure of the dashboard shows data; returns their marks."""
    dash_handle = dash.element_handle()
    with contextlib.suppress(PlaywrightTimeout):  # the assertions below say what is missing
        page.wait_for_function(HAS_DATA_JS, arg=dash_handle)
    figures = page.evaluate(MARKS_JS, dash_handle)
    assert len(figures) >= FIGURES, figures
    assert all(f["marks"] > 0 for f in figures), [(f["title"], f["marks"]) for f in figures]
    check_time_axes(figures)
    return figures


def check_time_axes(figures: list[dict]) -> None:
    """Every figure has a time axis whose labels (HH:MM:SS, UTC) run forward from left to
    right, within one day: a reversed axis or a domain of days fails here. The profile's
    axes are volume and price (it stands beside the price chart)."""
    for figure in figures:
        if figure["panel"] == "profile":
            assert not figure["times"], figure
            continue
        seconds = [seconds_of_day(label) for label in figure["times"]]
        steps = [(b - a) % 86_400 for a, b in itertools.pairwise(seconds)]
        assert len(seconds) >= 2 and sum(steps) < 86_400, (figure["title"], figure["times"])


def seconds_of_day(label: str) -> int:
    found = re.fullmatch(r"(\d\d):(\d\d):(\d\d)", label)
    assert found, f"time axis label {label!r} is not HH:MM:SS"
    hours, minutes, seconds = map(int, found.groups())
    return hours * 3600 + minutes * 60 + seconds


def wait_for_change(page, dash, before: list[dict]) -> None:
    """Await a look at the figures whose marks differ from `before` (within LOOK)."""
    await_js(
        page,
        f"([dash, before]) => {GEOMETRY_JS}(dash) !== before",
        [dash.element_handle(), _geometry(before)],
        "the dashboard's marks did not change",
    )


def panel_changes(page, dash, panel: str, before: list[dict]) -> None:
    """Await a look at `panel` whose marks are there and differ from `before`'s."""
    (old,) = [f for f in before if f["panel"] == panel]
    await_js(
        page,
        f"""([dash, panel, before]) => {{
              const now = {PANEL_JS}(dash, panel);
              return now.marks > 0 && now.geometry !== before;
            }}""",
        [dash.element_handle(), panel, old["geometry"]],
        f"the {panel} panel's marks did not change",
    )


def moving_while_collecting(page, dash, running) -> None:
    """While the collect cell is still running, the ticks count grows and the marks change."""
    ticks, before = page.evaluate(TICKS_JS), page.evaluate(MARKS_JS, dash.element_handle())
    await_js(
        page,
        f"""([dash, before, ticks, running]) => running.isConnected
              && running.innerText.includes('[*]')
              && ({TICKS_JS})() > ticks
              && {GEOMETRY_JS}(dash) !== before""",
        [dash.element_handle(), _geometry(before), ticks, running.element_handle()],
        "the dashboard stood still while the collect cell ran",
    )


def shoot(page, dash, tmp_path: Path) -> None:
    """Screenshots of the page and of the dashboard; the latter to docs/ if asked for."""
    update = os.environ.get("IBSTREAM_UPDATE_SCREENSHOT") == "1"
    if update:
        wanted = f"() => ({TICKS_JS})() >= {README_TICKS}"
        await_js(page, wanted, None, f"fewer than {README_TICKS} ticks arrived", 120_000)
        check_time_axes(page.evaluate(MARKS_JS, dash.element_handle()))
    dash.scroll_into_view_if_needed()
    page.screenshot(path=tmp_path / "jupyterlab.png")
    dash.screenshot(path=tmp_path / "dashboard.png")
    print(f"\nscreenshots: {tmp_path / 'dashboard.png'} and {tmp_path / 'jupyterlab.png'}")
    if update:
        shutil.copyfile(tmp_path / "dashboard.png", ROOT / "docs" / "dashboard.png")
        print(f"copied the dashboard's screenshot to {ROOT / 'docs' / 'dashboard.png'}")


def await_js(page, predicate: str, arg: object, failure: str, timeout: float = LOOK) -> None:
    """Await a JavaScript predicate on the page; an AssertionError saying `failure` if it
    does not hold within `timeout` ms."""
    try:
        page.wait_for_function(predicate, arg=arg, timeout=timeout)
    except PlaywrightTimeout:
        raise AssertionError(f"{failure} within {timeout / 1000:g} s") from None


def _geometry(figures: list[dict]) -> str:
    """What GEOMETRY_JS gives for these figures."""
    return "\n".join(f["geometry"] for f in figures)
