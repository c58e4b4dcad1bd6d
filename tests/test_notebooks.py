"""Every notebook in notebooks/ runs top to bottom in a real kernel, headless, and shows data.

The test starts the server the notebooks use ($IBSTREAM_URL on a free port, simulator data)
and owns it: a notebook's `ensure_server()` finds it running, and it is stopped here whatever
the notebook did. A server a notebook started anyway (its pid is in the outputs) is stopped
too.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from ibstream.launch import ensure_server, health
from tests.client_fixtures import free_port

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("IBSTREAM_URL", url)  # the kernel inherits it
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
    assert running, "the notebook stopped a server it did not start"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]  # fmt: skip
    assert not errors
    assert f"using the ibstream server already running at {url}" in text
    ticks = re.search(r"collected (\d+) ticks", text)
    assert ticks and int(ticks.group(1)) > 0, text
    found = re.search(r"(\d+) delta bars", text)
    assert found and int(found.group(1)) > 0, text
    assert "net_delta" in text and f"left {url} running" in text


def test_notebooks_are_committed_clean():
    assert NOTEBOOKS, "notebooks/ holds no notebook"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code), f"{path.name} has outputs"
