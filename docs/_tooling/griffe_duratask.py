"""What the API reference needs from duratask's docstrings, as a Griffe extension.

mkdocstrings loads duratask with Griffe and, through ``mkdocs.yml``, this extension. Once the
package is loaded, the extension:

- reports every public object without a docstring as a warning, so that
  ``mkdocs build --strict`` fails (see :func:`missing_docstrings` for what "public" means);
- turns the Sphinx roles of the docstrings (``:class:`X```, ``:meth:`~a.b.c```...) into
  cross-references to the object's page in the reference, under its public name
  (``duratask.TaskHubWorker``, never the module it happens to be defined in); a role that
  names nothing Griffe can find is reported as a warning too.

``tests/docs`` imports this file to run the same checks without building the site.
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import griffe

# Warnings under the "mkdocs" logger are what `mkdocs build --strict` counts.
LOG = logging.getLogger("mkdocs.plugins.duratask_api")

PACKAGE = "duratask"
# The namespaces users import from. Everything their __all__ exports is public API and is
# rendered in docs/reference/ under that name.
PUBLIC_NAMESPACES = ("duratask", "duratask.testing", "duratask.backends", "duratask.dashboard")

_ROLE = re.compile(r":(class|meth|func|exc|attr|mod|obj|data|const):`(~?)([^`]+)`")
_ENUM_BASES = {"Enum", "IntEnum", "StrEnum", "Flag", "IntFlag"}


def _namespace(pkg: griffe.Module, namespace: str) -> griffe.Module:
    if namespace == pkg.path:
        return pkg
    found = pkg[namespace.removeprefix(pkg.path + ".")]
    assert isinstance(found, griffe.Module), namespace
    return found


def _target(obj: griffe.Object | griffe.Alias) -> griffe.Object:
    return obj.final_target if isinstance(obj, griffe.Alias) else obj


def _public_members(cls: griffe.Class) -> Iterator[tuple[str, griffe.Object]]:
    """A class's own members that the reference renders: no leading underscore."""
    for name, member in cls.members.items():
        if name.startswith("_") or isinstance(member, griffe.Alias):
            continue
        yield name, member


def public_api(
    pkg: griffe.Module, namespaces: Sequence[str] = PUBLIC_NAMESPACES
) -> dict[str, griffe.Object]:
    """Every public object by its public path: the exports of each public namespace and the
    members of the exported classes. An object exported twice keeps its first public path."""
    api: dict[str, griffe.Object] = {}
    seen: set[str] = set()
    for namespace in namespaces:
        module = _namespace(pkg, namespace)
        for name in module.exports or ():
            if not isinstance(name, str) or name.startswith("__"):
                continue
            obj = _target(module[name])
            if obj.path in seen:
                continue
            seen.add(obj.path)
            api[f"{namespace}.{name}"] = obj
            if isinstance(obj, griffe.Class):
                for member_name, member in _public_members(obj):
                    api[f"{namespace}.{name}.{member_name}"] = member
    return api


def _is_enum(cls: griffe.Object | None) -> bool:
    if not isinstance(cls, griffe.Class):
        return False
    return any(str(base).rsplit(".", 1)[-1] in _ENUM_BASES for base in cls.bases)


def _documented_attributes(cls: griffe.Object | None) -> set[str]:
    """Names listed in the ``Attributes:`` section of a class docstring."""
    if cls is None or cls.docstring is None:
        return set()
    names: set[str] = set()
    for section in cls.docstring.parse("google"):
        if section.kind is griffe.DocstringSectionKind.attributes:
            names.update(attribute.name for attribute in section.value)
    return names


def missing_docstrings(
    pkg: griffe.Module, namespaces: Sequence[str] = PUBLIC_NAMESPACES
) -> list[str]:
    """Public paths of the public objects that have no docstring.

    Public objects are the names in ``__all__`` of the ``namespaces`` and the members
    of those classes whose names do not start with an underscore. A class, function, method
    or property needs a docstring of its own. An attribute is documented by a docstring of its
    own or by an entry in the ``Attributes:`` section of its class's docstring; the members
    of an enum are their own documentation.
    """
    missing = []
    for public, obj in public_api(pkg, namespaces).items():
        if obj.docstring is not None and obj.docstring.value.strip():
            continue
        if isinstance(obj, griffe.Attribute) and obj.parent is not None:
            if _is_enum(obj.parent) or obj.name in _documented_attributes(obj.parent):
                continue
        missing.append(public)
    return missing


def _canonical(pkg: griffe.Module, path: str) -> str | None:
    """The path where the object ``path`` names is defined, or None if there is none."""
    if path == pkg.path:
        return path
    if not path.startswith(pkg.path + "."):
        return None
    try:
        found = pkg[path.removeprefix(pkg.path + ".")]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    return _target(found).path


def _scope(obj: griffe.Object) -> griffe.Object:
    # An attribute has no names of its own: resolve from the class or module around it.
    return obj.parent if isinstance(obj, griffe.Attribute) and obj.parent is not None else obj


def crossref_roles(
    obj: griffe.Object, pkg: griffe.Module, public: dict[str, str]
) -> tuple[str, list[str]]:
    """``obj``'s docstring with its Sphinx roles turned into Markdown, and the roles that
    name nothing. A role naming public API becomes a cross-reference to it; one naming
    something that is not rendered (a private helper, a builtin) becomes plain code."""
    assert obj.docstring is not None
    unresolved: list[str] = []

    def replace(match: re.Match[str]) -> str:
        role, short, written = match.group(1), match.group(2), match.group(3).strip()
        name = written.removesuffix("()")
        shown = name.rsplit(".", 1)[-1] if short else name
        if role in ("meth", "func"):
            shown += "()"
        head, _, rest = name.partition(".")
        if head == pkg.path:
            path = name
        elif hasattr(builtins, head):
            return f"`{shown}`"
        else:
            try:
                path = _scope(obj).resolve(head) + (f".{rest}" if rest else "")
            except griffe.NameResolutionError:
                unresolved.append(match.group(0))
                return f"`{shown}`"
        if not path.startswith(pkg.path + "."):
            return f"`{shown}`"  # the standard library or another package: not linked
        canonical = _canonical(pkg, path)
        if canonical is None:
            unresolved.append(match.group(0))
            return f"`{shown}`"
        target = public.get(canonical)
        return f"[`{shown}`][{target}]" if target else f"`{shown}`"

    return _ROLE.sub(replace, obj.docstring.value), unresolved


class DurataskDocs(griffe.Extension):
    """Checks the docstrings of duratask's public API and links their cross-references."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Run once the whole package is loaded: report, then rewrite the docstrings."""
        if pkg.path != PACKAGE:
            return
        for path in missing_docstrings(pkg):
            LOG.warning("duratask API reference: %s has no docstring", path)
        api = public_api(pkg)
        public = {obj.path: path for path, obj in api.items()}
        # Only what the reference renders: the public objects.
        for obj in api.values():
            if obj.docstring is None or ":" not in obj.docstring.value:
                continue
            text, unresolved = crossref_roles(obj, pkg, public)
            for role in unresolved:
                LOG.warning(
                    "duratask API reference: the docstring of %s refers to %s, which names nothing",
                    public[obj.path],
                    role,
                )
            obj.docstring.value = text
