"""The API reference's checks (docs/_tooling), run without building the site.

``make docs`` runs the same checks inside ``mkdocs build --strict``; here they also run on
a small package made up for the test, to show that a missing docstring is caught.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import ModuleType

import griffe
import pytest

from .conftest import ROOT, TOOLING, load_file


@pytest.fixture(scope="module")
def tooling() -> ModuleType:
    return load_file(TOOLING / "griffe_duratask.py")


@pytest.fixture(scope="module")
def duratask_api() -> griffe.Module:
    pkg = griffe.load("duratask", search_paths=[ROOT / "src"])
    assert isinstance(pkg, griffe.Module)
    return pkg


def test_every_public_object_has_a_docstring(
    tooling: ModuleType, duratask_api: griffe.Module
) -> None:
    assert tooling.missing_docstrings(duratask_api) == []


def test_every_cross_reference_in_a_public_docstring_names_something(
    tooling: ModuleType, duratask_api: griffe.Module
) -> None:
    api = tooling.public_api(duratask_api)
    public = {obj.path: path for path, obj in api.items()}
    unresolved = {
        path: roles
        for path, obj in api.items()
        if obj.docstring is not None
        for roles in [tooling.crossref_roles(obj, duratask_api, public)[1]]
        if roles
    }
    assert unresolved == {}


def test_every_public_name_is_rendered_in_the_reference() -> None:
    hooks = load_file(TOOLING / "hooks.py")
    assert hooks.unrendered_exports(ROOT) == []


def test_a_role_becomes_a_link_to_the_public_name(
    tooling: ModuleType, duratask_api: griffe.Module
) -> None:
    api = tooling.public_api(duratask_api)
    public = {obj.path: path for path, obj in api.items()}
    method = api["duratask.AsyncTaskHubClient.purge_orchestration"]
    text, unresolved = tooling.crossref_roles(method, duratask_api, public)
    assert unresolved == []
    assert "[`InvalidOperationError`][duratask.InvalidOperationError]" in text


FAKE_PACKAGE = '''
"""A package with gaps in its documentation."""

__all__ = ["Documented", "undocumented"]


class Documented:
    """Documented, with an undocumented method and attribute.

    Attributes:
        listed: Documented in the class docstring.
    """

    listed: int = 1
    bare: int = 2

    def method(self) -> None:
        pass

    def _private(self) -> None:
        pass

    @property
    def described(self) -> int:
        """Documented."""
        return 3


def undocumented() -> None:
    pass
'''


def test_a_missing_docstring_is_reported(tooling: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "gappy").mkdir()
    (tmp_path / "gappy" / "__init__.py").write_text(textwrap.dedent(FAKE_PACKAGE))
    pkg = griffe.load("gappy", search_paths=[tmp_path])
    assert isinstance(pkg, griffe.Module)

    assert tooling.missing_docstrings(pkg, ["gappy"]) == [
        "gappy.Documented.bare",
        "gappy.Documented.method",
        "gappy.undocumented",
    ]
