"""`import ibstream` stays light; the public names load what they need on first use."""

import subprocess
import sys

HEAVY = (
    "pandas",
    "numpy",
    "pyarrow",
    "websockets",
    "httpx",
    "ib_insync",
    "uvicorn",
    "bqplot",
    "ipywidgets",
)


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_import_loads_no_heavy_package():
    loaded = _run(f"import sys, ibstream; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert loaded == "[]"


def test_public_names_resolve_lazily():
    out = _run(
        "import ibstream\n"
        "names = [n for n in ibstream.__all__ if getattr(ibstream, n) is None]\n"
        "print(names, ibstream.analytics.bars.__module__, callable(ibstream.classify))"
    )
    assert out == "[] ibstream.analytics.bars True"


def test_unknown_name_is_an_attribute_error():
    out = _run(
        "import ibstream\ntry:\n    ibstream.nope\nexcept AttributeError as e:\n    print(e)"
    )
    assert "no attribute 'nope'" in out


def test_dir_shows_only_the_public_api():
    out = _run("import ibstream, ibstream.client\nprint(' '.join(dir(ibstream)))").split()
    assert set(out) == {*__import__("ibstream").__all__, "__version__"}
    for private in ("Any", "TYPE_CHECKING", "annotations", "importlib", "client", "errors"):
        assert private not in out
