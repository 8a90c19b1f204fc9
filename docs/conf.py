"""Sphinx configuration: the user guide (Markdown, through myst-parser) and the API reference
(autodoc over the public namespace, NumPy-style docstrings through napoleon).

Build with warnings as errors::

    python -m pip install -e '.[docs]'
    python -m sphinx -W -b html docs docs/_build/html
"""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # the checkout's numbagrad, not an installed one

import numbagrad  # noqa: E402

project = "numbagrad"
author = "the numbagrad developers"
copyright = "numbagrad developers, MIT license"
release = numbagrad.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# autodoc: document what the public namespace holds, in source order, without importing the
# engine's private modules for their own pages (api.rst lists the public objects by name)
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"undoc-members": False}
napoleon_numpy_docstring = True
napoleon_google_docstring = False

# myst: ```python fences are code; headings get anchors for in-page links
myst_heading_anchors = 3

html_theme = "alabaster"
html_static_path = []
html_title = f"numbagrad {release}"
