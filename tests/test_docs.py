"""The documentation: the site builds without a warning, every link and anchor
resolves, and the code blocks meant to run do run.

The repository also stands alone: its documents refer to no document outside it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import events
import events.testing

from .servers import ROOT

SKIP_DIRS = {
    ".git",
    ".venv",
    ".venv-django6",
    ".run",
    "node_modules",
    "__pycache__",
    "results",
    "staticfiles",
    "_build",
}
TEXT_SUFFIXES = {".md", ".py", ".js", ".html", ".txt", ".toml", ".conf", ".service", ".example", ".sh", ""}
DOCS = ROOT / "docs"

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*?)\n(.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE)
LINK = re.compile(r"\]\(((?!https?:|mailto:)[^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def repository_files() -> Iterator[Path]:
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [d for d in subdirs if d not in SKIP_DIRS and not d.startswith((".venv", "."))]
        for name in files:
            path = Path(directory, name)
            if name not in SKIP_DIRS and not path.is_symlink() and path.suffix in TEXT_SUFFIXES:
                yield path


def markdown_pages() -> list[Path]:
    """The Markdown a reader follows links in: README, CHANGELOG and the docs/ site."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    return pages + sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)


def without_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code, where brackets are not links."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def code_blocks(path: Path, language: str | None = None) -> list[str]:
    """The fenced code blocks of ``path`` (of one language, if given), dedented, in order."""
    blocks = []
    for _fence, info, body in FENCE.findall(path.read_text()):
        if language is not None and info.strip() != language:
            continue
        lines = body.splitlines()
        indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
        blocks.append("\n".join(line[indent:] for line in lines) + "\n")
    return blocks


def slug(title: str) -> str:
    """The anchor MyST (``myst_heading_anchors``) and GitHub give a heading."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text only
    title = title.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", title.strip().lower().replace(" ", "-"))


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for _level, title in HEADING.findall(FENCE.sub("", path.read_text())):
        name = slug(title)
        unique, n = name, 0
        while unique in found:
            n += 1
            unique = f"{name}-{n}"
        found.add(unique)
    return found


def test_nothing_refers_to_a_design_document_outside_the_repository() -> None:
    offenders = []
    for path in repository_files():
        text = path.read_text(errors="replace")
        if path != Path(__file__) and re.search(r"DESIGN\.md|DESIGN §|/work/shared", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], offenders


def test_the_slug_is_the_one_myst_and_github_make() -> None:
    assert slug("Composite ids (Redis Cluster)") == "composite-ids-redis-cluster"
    assert slug("The template tag: `{% live_events %}`") == "the-template-tag--live_events-"
    assert slug("Redis restarts: what clients see") == "redis-restarts-what-clients-see"


def test_relative_links_and_their_anchors_resolve() -> None:
    """Every relative link in README.md, CHANGELOG.md and docs/**/*.md names a file, and an anchor there."""
    assert len(markdown_pages()) > 20
    missing = []
    for page in markdown_pages():
        for target in LINK.findall(without_code(page.read_text())):
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not resolved.exists():
                missing.append(f"{where} (no such file)")
            elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
                missing.append(f"{where} (no such anchor)")
    assert missing == [], "\n".join(missing)


def test_the_link_check_can_fail(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A section\n\nSee [it](#a-section), [that](#nowhere) and `[not](a-link.md)`.\n")
    links = LINK.findall(without_code(page.read_text()))
    assert links == ["#a-section", "#nowhere"]
    assert anchors(page) == {"title", "a-section"}


def test_files_the_deployment_files_refer_to_exist() -> None:
    """deploy/ names the docs pages that explain it; each one exists."""
    referred = []
    for path in sorted((ROOT / "deploy").rglob("*")):
        if path.is_file():
            referred += re.findall(
                r"\b((?:docs|deploy|tests)/[\w./-]+\.(?:md|py|conf|service|example))", path.read_text()
            )
    assert "docs/howto/deploy.md" in referred
    missing = sorted({name for name in referred if not (ROOT / name).exists()})
    assert missing == [], missing


def test_pages_that_existed_before_the_site_still_exist() -> None:
    for name in ("capacity.md", "deploy.md"):
        assert (DOCS / name).is_file(), name


def test_the_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """`make docs` in a temp dir: a broken reference, anchor, toctree or docstring fails the build."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-E", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (tmp_path / "html" / "reference" / "api.html").read_text()
    # autodoc rendered the docstrings through the public names.
    for name in ("events.publish", "events.PublishError", "events.testing.capture_events"):
        assert f'id="{name}"' in api, name


def test_the_api_reference_documents_every_public_name() -> None:
    api = (DOCS / "reference" / "api.md").read_text()
    for module in (events, events.testing):
        for name in module.__all__:
            assert re.search(rf"^\.\. auto\w+:: {module.__name__}\.{name}$", api, re.MULTILINE), (module, name)


@pytest.mark.parametrize("name", [*events.__all__, *(f"testing.{name}" for name in events.testing.__all__)])
def test_each_public_name_has_a_docstring_with_an_example(name: str) -> None:
    obj: Any = events
    for part in name.split("."):
        obj = getattr(obj, part)
    doc = obj.__doc__ or ""
    assert "::" in doc or ">>>" in doc, f"events.{name} has no example in its docstring"


def test_the_template_tag_and_client_js_carry_their_examples() -> None:
    from events.templatetags.events import live_events

    assert "{% live_events" in (live_events.__doc__ or "")
    client = (ROOT / "events" / "static" / "events" / "client.js").read_text()
    blocks = re.findall(
        r"/\*\*((?:(?!\*/).)*)\*/\s*\n\s*(?:function (\w+)|(\w+):|class (\w+)|(\w+)\(\)|get (\w+)\(\))", client, re.S
    )
    documented = {next(n for n in names if n): body for body, *names in blocks}
    for name in ("subscribe", "config", "optionsFrom", "page", "Subscription", "unsubscribe", "leader"):
        assert "@example" in documented.get(name, ""), name


def test_readme_install_steps_are_the_installation_pages() -> None:
    """The README's numbered steps (which tests/test_install.py applies) are docs/installation.md's."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Installation", 1)[1].split("\n## ", 1)[0]
    readme_blocks = [block for block in FENCE.findall(section)]
    page_blocks = FENCE.findall((DOCS / "installation.md").read_text())
    assert len(readme_blocks) >= 5
    assert [body for _f, _i, body in readme_blocks] == [body for _f, _i, body in page_blocks]


def test_readme_is_a_landing_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert "make run " in readme and "make test " in readme


# The how-to "Test your project": its two examples run here, against the demo
# project, as a project's own tests would (the conftest gives them a real Redis).
_HOWTO_TESTING: dict[str, Any] = {"__name__": __name__}
for _block in code_blocks(DOCS / "howto" / "testing.md", "python"):
    exec(compile(_block, str(DOCS / "howto" / "testing.md"), "exec"), _HOWTO_TESTING)
DocsHowtoChangeTrackerTests = _HOWTO_TESTING["ChangeTrackerTests"]
test_docs_howto_the_board_hears_about_it = _HOWTO_TESTING["test_the_board_hears_about_it"]
test_docs_howto_pytest_django_example = _HOWTO_TESTING["test_a_change_invalidates_the_board"]


# The tutorial, applied to a fresh `startproject` as a reader would.
TUTORIAL_FILE = re.compile(r"^(?:# |<!-- )(\S+/\S+)(?: \((add at the end|the whole file)\))?(?: -->)?\n")


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.timeout(240)
def test_the_tutorial_makes_a_working_live_page(tmp_path: Path, redis_url: str) -> None:
    env = {key: value for key, value in os.environ.items() if key not in {"DJANGO_SETTINGS_MODULE"}}
    env["PYTHONPATH"] = str(ROOT)  # the app, as if installed
    run([sys.executable, "-m", "django", "startproject", "mysite"], tmp_path, env)
    site = tmp_path / "mysite"
    run([sys.executable, "manage.py", "startapp", "notes"], site, env)
    applied = []
    for block in code_blocks(DOCS / "tutorial.md"):
        match = TUTORIAL_FILE.match(block)
        if match is None:
            continue
        name, how = match.groups()
        target = site / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if how == "add at the end":
            target.write_text(target.read_text() + "\n" + block)
        else:
            target.write_text(block)
        applied.append(name)
    assert applied == [
        "mysite/settings.py", "mysite/asgi.py", "notes/models.py", "notes/apps.py", "notes/admin.py",
        "notes/views.py", "notes/urls.py", "mysite/urls.py",
        "notes/templates/notes/list.html", "notes/templates/notes/page.html",
    ]  # fmt: skip
    prefix = f"tutorial-{uuid.uuid4().hex[:8]}"
    with (site / "mysite" / "settings.py").open("a") as settings_file:
        settings_file.write(f"\nEVENTS.update({{'REDIS_URL': {redis_url!r}, 'PREFIX': {prefix!r}}})\n")

    run([sys.executable, "manage.py", "makemigrations", "notes"], site, env)
    run([sys.executable, "manage.py", "migrate", "-v0"], site, env)
    assert "no issues" in run([sys.executable, "manage.py", "check"], site, env)
    # The page subscribes, htmx re-fetches the fragment on live:notes, and a
    # saved note (from the shell, say) is announced on "notes".
    script = """
from django.test import Client
from django.test.utils import setup_test_environment
from events.testing import capture_events
from notes.models import Note

setup_test_environment()
page = Client().get("/").content.decode()
assert 'hx-trigger="live:notes from:body, live:reset from:body"' in page, page
assert '"topics": ["notes"]' in page and "events/client.js" in page, page
with capture_events() as published:
    Note.objects.create(text="from the shell")
assert [(e.topic, e.data["action"]) for e in published] == [("notes", "saved")], published
assert "from the shell" in Client().get("/list/").content.decode()
print("tutorial ok")
"""
    assert "tutorial ok" in run([sys.executable, "manage.py", "shell", "-c", script], site, env)
