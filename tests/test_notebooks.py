"""Every notebook in notebooks/ runs top to bottom in a real kernel, headless, and shows data.

The test starts the server the notebooks use ($IBSTREAM_URL on a free port, simulator data)
and owns it: a notebook's `ensure_server()` finds it running, and it is stopped here whatever
the notebook did. A server a notebook started anyway (its pid is in the outputs) is stopped
too. A run fails on any error output, on an empty DataFrame or Series shown, on a cell
ending in an expression that shows nothing, and on a count the notebook prints being zero.
"""

from __future__ import annotations

import ast
import os
import re
import signal
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from ibstream.server.launch import ensure_server, health
from tests.client_fixtures import free_port

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SHORT = "5"  # seconds a notebook collects live ticks for here

# Per notebook: printed counts that must be positive (one group of digits each), and text
# that must appear. A notebook not listed gets the generic checks only.
COUNTS = {
    "01_quickstart.ipynb": [r"collected (\d+) ticks", r"(\d+) trades:", r"(\d+) delta bars"],
    "02_delta_research.ipynb": [
        r"scored \d+ method x data set pairs on (\d+) trades",
        r"(\d+) delta bars of",
        r"footprint: (\d+) \(bar, price level\) rows",
        r"(\d+) bars with a BVC delta",
        r"VPIN: (\d+) buckets of",
        r"wrote and read back (\d+) rows of trades",
    ],
}
COUNTS["03_recorded_sessions.ipynb"] = [
    r"a client saw (\d+) ES ticks",
    r"of the last minute: (\d+) from the store",
    r"recorded (\d+) contract-days",
    r"ticks per minute: (\d+) rows",
    r"classified (\d+) recorded ES trades",
    r"(\d+) delta bars of the recording",
    r"replayed (\d+) ticks",
]
TEXTS = {
    "01_quickstart.ipynb": ["using the ibstream server already running at {url}", "net_delta"],
    "02_delta_research.ipynb": ["net_delta", "net delta: ", "VPIN from BVC: correlation"],
    "03_recorded_sessions.ipynb": ["equal to the recording: True", "net_delta"],
}
EMPTY = re.compile(r"^(Empty DataFrame|Series\(\[\]|DataFrame\(\[\]|\[\]$)", re.M)


def output_text(nb: nbformat.NotebookNode) -> str:
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    return "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs
    )


def stop_started_by(text: str) -> None:
    for pid in map(int, re.findall(r"started an ibstream server at \S+ .*?\(pid (\d+)", text)):
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGTERM)
            psutil.Process(pid).wait(10)


def ends_in_expression(source: str) -> bool:
    body = ast.parse(source).body
    return bool(body) and isinstance(body[-1], ast.Expr) and not _is_call_of(body[-1], "print")


def _is_call_of(node: ast.Expr, name: str) -> bool:
    call = node.value
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == name


def empty_results(nb: nbformat.NotebookNode) -> list[str]:
    """Cells that end in an expression but show nothing, or show an empty frame."""
    found = []
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        shown = [o for o in cell.outputs if o.output_type in ("execute_result", "display_data")]
        texts = [str(o.get("data", {}).get("text/plain", "")) for o in shown]
        if ends_in_expression(cell.source) and not shown:
            found.append(f"cell {cell.execution_count} shows nothing:\n{cell.source}")
        found += [f"cell {cell.execution_count} shows {t[:80]!r}" for t in texts if EMPTY.search(t)]
    return found


def run(path: Path, url: str, tmp_path: Path) -> tuple[nbformat.NotebookNode, str, bool]:
    """Execute the notebook against a server this test owns; the executed notebook, its
    output text and whether the server was still running at the end."""
    server = ensure_server(url, demo=True, log_file=tmp_path / "server.log")
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(
            nb,
            timeout=90,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        ).execute()
    finally:
        text = output_text(nb)
        stop_started_by(text)
        running = health(url) is not None
        server.stop()
    return nb, text, running


@pytest.fixture
def kernel_env(monkeypatch, tmp_path) -> str:
    """Environment the kernel inherits: the server URL, short collections, an export dir."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("IBSTREAM_URL", url)
    monkeypatch.setenv("IBSTREAM_QUICKSTART_SECONDS", SHORT)
    monkeypatch.setenv("IBSTREAM_RESEARCH_SECONDS", SHORT)
    monkeypatch.setenv("IBSTREAM_EXPORT_DIR", str(tmp_path / "export"))
    monkeypatch.setenv("IBSTREAM_RECORD_SECONDS", SHORT)
    monkeypatch.setenv("IBSTREAM_STORE", str(tmp_path / "store"))
    return url


def check(nb: nbformat.NotebookNode, text: str, name: str, url: str) -> None:
    errors = [
        f"{o.ename}: {o.evalue}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors, errors
    assert not empty_results(nb), empty_results(nb)
    for pattern in COUNTS.get(name, []):
        found = re.search(pattern, text)
        assert found and int(found.group(1)) > 0, f"{name}: no positive count for {pattern!r}"
    for expected in TEXTS.get(name, []):
        assert expected.format(url=url) in text, f"{name}: {expected!r} not in the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, kernel_env, tmp_path):
    url = kernel_env
    nb, text, running = run(path, url, tmp_path)
    assert running, "the notebook stopped a server it did not start"
    check(nb, text, path.name, url)
    if path.name == "01_quickstart.ipynb":
        assert f"left {url} running" in text
    if path.name == "02_delta_research.ipynb":
        assert "recorded data: 2 data sets with the true aggressor" in text
        assert len(list((tmp_path / "export").glob("*.parquet"))) == 3


def test_research_notebook_without_recorded_data(kernel_env, tmp_path, monkeypatch):
    """$IBSTREAM_DATA pointing nowhere: the research notebook collects live ticks and says what it scores."""
    url = kernel_env
    monkeypatch.setenv("IBSTREAM_DATA", str(tmp_path / "no-data-here"))
    path = NOTEBOOK_DIR / "02_delta_research.ipynb"
    nb, text, running = run(path, url, tmp_path)
    assert running, "the notebook stopped a server it did not start"
    check(nb, text, path.name, url)
    assert "no recorded data" in text and f"already running at {url}" in text
    found = re.search(r"collected (\d+) ticks, (\d+) trades", text)
    assert found and int(found.group(2)) > 0, text
    assert "live ES (vs lee_ready)" in text


def test_notebooks_are_committed_clean():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        assert "widgets" not in nb.metadata, f"{path.name} holds saved widget state"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code), f"{path.name} has outputs"
