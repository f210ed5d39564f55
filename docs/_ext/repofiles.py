"""Markdown links from a page to a repository file outside ``docs/`` (``../kernels/README.md``).

On GitHub such a link opens the file; the HTML reference has no copy of it, and MyST
would report an unknown document. This transform renders the link as the file's path
in the repository (``kernels/README.md``, in code style) when, and only when, the file
exists: a link to a missing file still fails the strict build.
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform


class RepositoryFileLinks(SphinxPostTransform):
    default_priority = 8  # before MyST's resolver (9), which would warn

    def run(self, **kwargs):
        srcdir = Path(self.env.srcdir).resolve()
        root = srcdir.parent
        for node in list(self.document.findall(addnodes.pending_xref)):
            if node.get("reftype") != "myst" or node.get("refdomain") != "doc":
                continue
            docname = node["reftarget"]
            if docname in self.env.all_docs:
                continue
            path = (srcdir / (docname.lstrip("/") if not Path(docname).is_absolute() else docname)).resolve()
            for candidate in (path, path.with_name(path.name + ".md")):
                try:
                    rel = candidate.relative_to(root)
                except ValueError:
                    continue
                if candidate.is_file() and not candidate.is_relative_to(srcdir):
                    text = node.astext()
                    shown = str(rel) + (f"#{node['reftargetid']}" if node.get("reftargetid") else "")
                    if text and text not in (str(rel), shown):
                        new = [nodes.inline("", text), nodes.Text(" ("), nodes.literal(shown, shown), nodes.Text(")")]
                    else:
                        new = [nodes.literal(shown, shown)]
                    node.replace_self(new)
                    break


def setup(app):
    app.add_post_transform(RepositoryFileLinks)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
