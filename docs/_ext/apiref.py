"""The API reference from ``__all__``, and a check that every public name has a docstring.

``.. apiref:: fusedfocal.data`` documents one public module: its docstring, then every
name in its ``__all__``. A name is documented in full once, on the page of its *home*
(the public module it is defined under, e.g. ``fusedfocal.losses`` for
``fusedfocal.losses.asymmetric.asymmetric_loss``); the other public modules that
re-export it list it in a table that links to that entry, and a cross-reference to the
re-exported name (``:func:`fusedfocal.sigmoid_focal_loss```) resolves to it too. So a
name added to ``__all__`` appears in the reference with no edit to ``docs/``.

The build fails (a warning under ``-W``) for a public name without a docstring: a
function, class or module without ``__doc__`` of its own, a constant without a ``#:``
comment, or a public method or property of a public class without one. The same check
runs without Sphinx in ``tests/test_public_docstrings.py`` (``undocumented()``).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
from functools import lru_cache

#: The public modules, in the order that decides a re-exported name's home when its
#: ``__module__`` does not (the top level re-exports everything, so it comes last).
PUBLIC_MODULES = (
    "fusedfocal.ops",
    "fusedfocal.ops.native",
    "fusedfocal.ops.head_update",
    "fusedfocal.losses",
    "fusedfocal.keras",
    "fusedfocal.legacy",
    "fusedfocal.data",
    "fusedfocal.metrics_xmc",
    "fusedfocal.profiling",
    "fusedfocal.hub",
    "fusedfocal.distributed",
    "fusedfocal",
)


#: The package whose classes count as ours (members documented, checked); Keras' are not.
PACKAGE = "fusedfocal"


def _ours(modname):
    return modname == PACKAGE or modname.startswith(PACKAGE + ".")


def _module(modname):
    return importlib.import_module(modname)


def public_names(modname):
    """``(name, object)`` for every name in ``modname.__all__``, in that order."""
    mod = _module(modname)
    return [(name, getattr(mod, name)) for name in mod.__all__]


def kind(obj):
    """``"module"``, ``"class"``, ``"function"`` or ``"data"``."""
    if isinstance(obj, types.ModuleType):
        return "module"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "data"


def _exporters(name, obj):
    return [m for m in PUBLIC_MODULES if name in _module(m).__all__ and getattr(_module(m), name) is obj]


@lru_cache(maxsize=None)
def _home_cached(modname, name):
    obj = getattr(_module(modname), name)
    if kind(obj) == "module":
        return obj.__name__
    exporters = _exporters(name, obj)
    defined = getattr(obj, "__module__", None) if kind(obj) in ("class", "function") else None
    if defined:
        under = [m for m in exporters if defined == m or defined.startswith(m + ".")]
        if under:
            return max(under, key=len) + "." + name
    return (exporters[0] if exporters else modname) + "." + name


def home(modname, name):
    """The full name under which ``modname.name`` is documented in full."""
    return _home_cached(modname, name)


def aliases():
    """``{re-exported full name: home}`` over the public modules (modules excluded)."""
    out = {}
    for modname in PUBLIC_MODULES:
        for name, obj in public_names(modname):
            target = home(modname, name)
            if kind(obj) != "module" and target != f"{modname}.{name}":
                out[f"{modname}.{name}"] = target
    return out


def _own_doc(obj):
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc).strip() if isinstance(doc, str) else ""


def _attr_doc(modname, name):
    """The ``#:`` comment (or the string after the assignment) of a module constant."""
    from sphinx.pycode import ModuleAnalyzer  # only here: the rest works without Sphinx

    try:
        docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    except Exception:  # noqa: BLE001 - no source (a compiled module): no comment
        return ""
    return "\n".join(docs.get(("", name), [])).strip()


def _defining_modules(modname, name, obj):
    """``modname`` first, then every loaded ``fusedfocal`` module holding the same object
    under the same name: where a constant's ``#:`` comment can be."""
    found = [modname]
    for other, mod in sorted(dict(sys.modules).items()):
        if _ours(other) and other != modname and getattr(mod, name, None) is obj:
            found.append(other)
    return found


def constant_doc(modname, name):
    """The doc comment of constant ``modname.name``, from wherever it is assigned."""
    obj = getattr(_module(modname), name)
    for where in _defining_modules(modname, name, obj):
        doc = _attr_doc(where, name)
        if doc:
            return doc
    return ""


def docstring(modname, name):
    """The documentation of ``modname.name``: its own ``__doc__``, or a constant's comment."""
    obj = getattr(_module(modname), name)
    if kind(obj) == "data":
        return constant_doc(modname, name)
    return _own_doc(obj)


def own_bases(cls):
    """``cls`` and its bases up to the first one from outside ``fusedfocal`` (Keras'): the
    classes whose members the reference documents. The page names them in ``:members:``
    (Sphinx 9's ``:inherited-members: Layer`` still lets Keras' own members through)."""
    out = []
    for base in cls.__mro__:
        if not _ours(base.__module__):
            break
        out.append(base)
    return out


def public_members(cls):
    """``(name, member)`` for the public methods and properties that ``cls`` or its own
    (``fusedfocal``) bases define, less the overrides of a foreign base's method (Keras'
    ``call``, ``get_config``, ``build``...: Keras documents those): what the reference shows."""
    own = own_bases(cls)
    foreign = {name for base in cls.__mro__ if base not in own for name in vars(base)}
    out, seen = [], set()
    for base in own:
        for name, member in vars(base).items():
            if name.startswith("_") or name in seen or name in foreign:
                continue
            seen.add(name)
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property) or inspect.isfunction(member):
                out.append((name, member))
    return out


def undocumented():
    """Every public name without documentation, as ``"module.name"`` (sorted)."""
    missing = set()
    for modname in PUBLIC_MODULES:
        for name, obj in public_names(modname):
            if name == "__version__":
                continue  # documented by its name (PEP 396); no comment to attach
            full = home(modname, name)
            if not docstring(modname, name):
                missing.add(full)
            if kind(obj) == "class" and full == f"{modname}.{name}":
                for member_name, member in public_members(obj):
                    if not _own_doc(member):
                        missing.add(f"{full}.{member_name}")
    return sorted(missing)


# --------------------------------------------------------------------- Sphinx


def _rst(modname):
    """The reStructuredText for one public module's page body."""
    lines = [f".. automodule:: {modname}", ""]
    here, elsewhere, modules = [], {}, {}
    for name, obj in public_names(modname):
        if name == "__version__":
            lines += [".. py:data:: __version__", f"   :value: {obj!r}", "",
                      "   The package version.", ""]
            continue
        if kind(obj) == "module":
            modules[name] = obj.__name__
        elif home(modname, name) == f"{modname}.{name}":
            here.append((name, obj))
        else:
            where, _, short = home(modname, name).rpartition(".")
            elsewhere.setdefault(where, []).append(short)
    if modules:
        lines += [".. rubric:: Modules", ""]
        for name, m in modules.items():
            alias = "" if m == f"{modname}.{name}" else f"``{modname}.{name}`` is "
            lines += [f"* {alias}:mod:`{m}`: {_summary(_own_doc(_module(m)))}"]
        lines += [""]
    # Each table in the context of the module its entries live in, so that the relative
    # references in their summaries resolve; the entries' own sections name them in full.
    for where, names in elsewhere.items():
        lines += [f".. rubric:: Re-exported from :mod:`{where}`", "", f".. py:currentmodule:: {where}", "",
                  ".. autosummary::", "   :nosignatures:", ""] + [f"   {n}" for n in names] + [""]
    lines += [f".. py:currentmodule:: {modname}", ""]
    if here:
        lines += [".. rubric:: Summary", "", ".. autosummary::", "   :nosignatures:", ""]
        lines += [f"   {n}" for n, _ in here] + [""]
    for name, obj in here:
        full = f"{modname}.{name}"
        k = kind(obj)
        if k == "class":
            members = [m for m, member in public_members(obj)]
            lines += [f".. autoclass:: {full}"]
            if members:
                lines += [f"   :members: {', '.join(members)}"]
            lines += [""]
        elif k == "function":
            lines += [f".. autofunction:: {full}", ""]
        else:
            value = repr(obj)
            lines += [f".. py:data:: {name}"]
            if len(value) <= 80:
                lines += [f"   :value: {value}"]
            lines += [""] + ["   " + ln if ln else "" for ln in constant_doc(modname, name).splitlines()] + [""]
    return "\n".join(lines)


def _summary(doc):
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    return first


def setup(app):
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util import logging
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    logger = logging.getLogger(__name__)

    class ApiRef(SphinxDirective):
        """``.. apiref:: fusedfocal.data``: the module's docstring and every name in ``__all__``."""

        required_arguments = 1
        has_content = False

        def run(self):
            modname = self.arguments[0]
            if modname not in PUBLIC_MODULES:
                logger.warning("apiref: %s is not in PUBLIC_MODULES (docs/_ext/apiref.py)", modname,
                               location=self.get_location())
            source = self.get_source_info()[0]
            content = StringList(_rst(modname).splitlines(), source=source)
            node = nodes.section()
            node.document = self.state.document
            nested_parse_with_titles(self.state, content, node)
            return node.children

    def check_docstrings(app):
        for full in undocumented():
            logger.warning("public name without a docstring: %s", full, type="apiref", subtype="docstring")

    table = {}

    def resolve_alias(app, env, node, contnode):
        """A reference to a re-exported name resolves to its home's entry."""
        if node.get("refdomain") != "py":
            return None
        if not table:
            table.update(aliases())
        target = node.get("reftarget", "")
        candidates = [target]
        if node.get("py:module"):
            candidates.append(f"{node['py:module']}.{target}")
        for name in candidates:
            if name in table:
                domain = env.domains["py"]
                return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], table[name],
                                           node, contnode)
        return None

    app.add_directive("apiref", ApiRef)
    app.connect("builder-inited", check_docstrings)
    app.connect("missing-reference", resolve_alias)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
