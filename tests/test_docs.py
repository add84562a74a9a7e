"""The repository stands alone: its documents refer to no document outside it."""

import os
import re
from collections.abc import Iterator
from pathlib import Path

from .servers import ROOT

SKIP_DIRS = {".git", ".venv", ".venv-django6", ".run", "node_modules", "__pycache__", "results", "staticfiles"}
TEXT_SUFFIXES = {".md", ".py", ".js", ".html", ".txt", ".toml", ".conf", ".service", ".example", ".sh", ""}


def repository_files() -> Iterator[Path]:
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS and not d.startswith((".venv", "."))]
        for name in files:
            path = Path(directory, name)
            if path.suffix in TEXT_SUFFIXES:
                yield path


def test_nothing_refers_to_a_design_document_outside_the_repository() -> None:
    offenders = []
    for path in repository_files():
        text = path.read_text(errors="replace")
        if path != Path(__file__) and re.search(r"DESIGN\.md|DESIGN §|/work/shared", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], offenders


def test_readme_links_to_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", readme)
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert missing == [], missing
    assert (ROOT / "CHANGELOG.md").exists()
