"""The public API: what `import streamflow` offers, and nothing by accident."""

from __future__ import annotations

import inspect

import streamflow


def test_all_is_sorted_and_complete() -> None:
    """`__all__` is sorted, every name in it exists, and every public class or function is in it."""
    assert streamflow.__all__ == sorted(streamflow.__all__)
    for name in streamflow.__all__:
        assert hasattr(streamflow, name), name
    public = {
        name for name, obj in vars(streamflow).items()
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
    }
    assert public == set(streamflow.__all__)


def test_errors_share_one_base() -> None:
    """Every exception streamflow exports derives from StreamflowError, so one except catches all."""
    for name in streamflow.__all__:
        obj = getattr(streamflow, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, streamflow.StreamflowError), name


def test_every_module_has_a_docstring() -> None:
    """Each module of the package opens with a docstring saying what it holds."""
    import pkgutil

    for info in pkgutil.iter_modules(streamflow.__path__, "streamflow."):
        if info.name == "streamflow.__main__":
            continue  # importing it runs the CLI
        module = __import__(info.name, fromlist=["_"])
        assert (module.__doc__ or "").strip(), info.name


def test_distribution_name_is_not_the_unrelated_pypi_streamflow() -> None:
    """The distribution is streamflow-redis (PyPI's "streamflow" is another project): pyproject's name
    and extras use it, no install line or message says `pip install 'streamflow[...]'`, and the README
    says to install from a checkout and links every guide page in its "Guides" list."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "streamflow-redis"
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            assert not requirement.startswith("streamflow["), (extra, requirement)
    files = [root / "README.md", root / "benchmarks" / "README.md", *(root / "docs").glob("*.md"),
             *(root / "streamflow").rglob("*.py"), *(root / "examples").rglob("*.py")]
    for path in files:
        text = path.read_text()
        assert not re.search(r"pip install[^\n]*['\" ]streamflow\[", text), path
    readme = (root / "README.md").read_text()
    assert "streamflow-redis" in readme and "from a checkout" in readme
    guides = readme.split("## Guides", 1)[1]
    for doc in ("docs/security.md", "docs/reliability.md", "docs/architecture.md",
                "docs/handlers.md", "docs/failures.md", "docs/jobs.md", "docs/operations.md",
                "docs/scaling.md", "docs/testing.md", "docs/top.md", "docs/benchmarks.md"):
        assert f"]({doc})" in guides, doc
