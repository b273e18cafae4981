"""Sphinx configuration for the cnbi-spawner docs (MyST Markdown + autodoc-traits)."""

project = "cnbi-spawner"
author = "cnbi-spawner developers"
copyright = "2026, cnbi-spawner developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "autodoc_traits",
]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
html_theme = "pydata_sphinx_theme"
html_title = "cnbi-spawner"
html_static_path = ["_static"]
autodoc_member_order = "bysource"


def _skip_upstream_traits(app, what, name, obj, skip, options):
    """Document only our own traits.

    ``autoconfigurable`` lists every configurable trait, inherited ones included, so
    CNBiSpawner would repeat all of KubeSpawner's and TmpLoginAuthenticator all of
    JupyterHub's Authenticator's. Those are documented upstream; the reference links there.
    """
    owner = getattr(obj, "this_class", None)
    if owner is not None and not owner.__module__.startswith("cnbi_spawner"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_upstream_traits)
