"""The README and the docs cannot drift from the project: every relative link and image resolves (a link to a
heading, to that heading), and every ``bench ...`` command line in their code blocks is accepted by the
CLI's own parser (parsed with its options' types and checks, not run)."""

import contextlib
import re
import shlex
from pathlib import Path

import click
import pytest

from bench.cli import main
from tests.helpers import YOUR_OWN, your_own_plugins

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
SHELL_FENCES = ("", "bash", "sh", "console")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, fence = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"^#{1,6} (.*)", line)):
            found.add(slug(m.group(1)))
    return found


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every markdown link and image outside code blocks."""
    found, fence = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
        elif not fence:
            found += [(number, m.group(1)) for m in LINK.finditer(line)]
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for number, target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{page.name}:{number}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{page.name}:{number}: {target} (no such heading)")
    return broken


def bench_commands(page: Path) -> list[tuple[int, str]]:
    """(line, command) of every ``bench ...`` command in a shell code block, comments dropped, and each
    part of a line chained with && or ; taken apart."""
    found, fence, pending = [], None, ""
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence not in SHELL_FENCES:
            continue
        text = pending + re.sub(r"\s+#.*$", "", line.strip().removeprefix("$ "))
        if text.endswith("\\"):  # continued on the next line
            pending = text[:-1] + " "
            continue
        pending = ""
        parts = re.split(r"\s*(?:&&|;)\s*", text)
        found += [(number, part) for part in parts if part.startswith("bench ")]
    return found


def parse(argv: list[str]) -> None:
    """Parse ``bench <argv>`` down to its command, as click does before it runs one."""
    context = main.make_context("bench", list(argv))
    command = main
    while isinstance(command, click.Group) and context.args + list(context._protected_args):
        name, command, rest = command.resolve_command(context, [*context._protected_args, *context.args])
        context = command.make_context(name, rest, parent=context)


def check_command(command: str, workdir: Path) -> str | None:
    """The parser's complaint about ``command``, or None. Paths the docs name as placeholders
    (``results/<run-id>``, ``results/bench-cpu.json``) are made in ``workdir`` first: the parser checks that
    they exist, and what is checked here is the options."""
    argv = shlex.split(command)[1:]
    for i, token in enumerate(argv):
        if not token.startswith("-") and ("/" in token or token.endswith((".json", ".npz"))):
            path = workdir / token.replace("<", "").replace(">", "")
            if path.suffix in (".json", ".npz", ".pt"):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
            argv[i] = str(path)
    try:
        parse(argv)
    except click.exceptions.Exit:  # --help, --version
        return None
    except click.UsageError as exc:
        return exc.format_message()
    return None


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_and_image_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_bench_command_in_the_docs_parses(page, tmp_path, monkeypatch):
    plugins = your_own_plugins(tmp_path, monkeypatch) if page == YOUR_OWN else contextlib.nullcontext()
    with plugins:  # the newcomer page's commands name the plugins its own package brings
        problems = [
            f"{page.name}:{number}: {command}\n  {complaint}"
            for number, command in bench_commands(page)
            if (complaint := check_command(command, tmp_path))
        ]
    assert problems == []


def test_the_checks_catch_a_broken_link_and_a_misspelled_option(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\nsee [there](missing.md), [here](#title) and [nowhere](#no-such)\n\n```bash\n"
        "bench run --denoisr unet\nbench run --steps ten\nbench run \\\n  --steps 10\n```\n"
    )
    assert broken_links(page) == [
        "page.md:3: missing.md (no such file)",
        "page.md:3: #no-such (no such heading)",
    ]
    complaints = [check_command(command, tmp_path) for _, command in bench_commands(page)]
    assert "No such option '--denoisr'" in complaints[0]
    assert "steps must be a positive integer, got 'ten'" in complaints[1]
    assert complaints[2] is None


def test_the_readme_stays_a_page_a_newcomer_reads():
    assert len((ROOT / "README.md").read_text().splitlines()) < 250
