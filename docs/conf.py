"""Sphinx configuration: the documentation site (``make docs`` builds it into ``docs/_build/html``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# autodoc imports the app (and the demo project's settings, so that Django is
# configured); nothing connects to Redis at import time.
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

import django  # noqa: E402

django.setup()

import events  # noqa: E402

project = "django-live-events"
author = "django-live-events contributors"
copyright = "django-live-events contributors"
release = version = events.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Headings up to ### get GitHub-style anchors, so `page.md#section` links work
# on GitHub and in the built site alike.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = False

html_theme = "furo"
html_title = f"django-live-events {release}"
pygments_style = "friendly"
pygments_dark_style = "monokai"
