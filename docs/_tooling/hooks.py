"""MkDocs hook: the API reference must render every public name of duratask.

Each name in ``__all__`` of a public namespace (see ``griffe_duratask.PUBLIC_NAMESPACES``)
needs a ``::: namespace.name`` block in some page. A missing one is a warning, so the strict
build fails when an export is added without its reference entry. (Missing docstrings and
broken cross-references are reported by the Griffe extension in ``griffe_duratask.py``.)
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any

_spec = importlib.util.spec_from_file_location(
    "duratask_docs_griffe", Path(__file__).with_name("griffe_duratask.py")
)
assert _spec is not None and _spec.loader is not None
_griffe_duratask = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_griffe_duratask)
PUBLIC_NAMESPACES: tuple[str, ...] = _griffe_duratask.PUBLIC_NAMESPACES

LOG = logging.getLogger("mkdocs.plugins.duratask_reference")
_DIRECTIVE = re.compile(r"^:::\s+(\S+)", re.MULTILINE)


def exported_names(src: Path) -> list[str]:
    """``namespace.name`` for every name the public namespaces export, read from the source."""
    names = []
    for namespace in PUBLIC_NAMESPACES:
        init = src.joinpath(*namespace.split("."), "__init__.py")
        for node in ast.parse(init.read_text()).body:
            if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
            ):
                exports = ast.literal_eval(node.value)
                names += [f"{namespace}.{name}" for name in exports if not name.startswith("__")]
    return names


def rendered_names(docs: Path) -> set[str]:
    """Every identifier that a ``::: identifier`` block of a page renders."""
    pages = docs.rglob("*.md")
    return {match.group(1) for page in pages for match in _DIRECTIVE.finditer(page.read_text())}


def unrendered_exports(root: Path) -> list[str]:
    """The public names that no page of the site renders."""
    rendered = rendered_names(root / "docs")
    return [name for name in exported_names(root / "src") if name not in rendered]


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Warn about every public name that no page renders."""
    root = Path(config["config_file_path"]).parent
    for name in unrendered_exports(root):
        LOG.warning("duratask API reference: %s is public but no page renders it", name)
