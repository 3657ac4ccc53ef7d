"""What the README and the guides in docs/ tell a user is true of the code: every link resolves
inside the repository (files and anchors), every ``GATEHOOK_*`` name is a setting (or a stream,
or a variable the compose files or tests read), every ``gatehook`` command shown exists with
the options shown, and no file a user reads points outside the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer.main

from gatehook.cli import app
from gatehook.settings_reference import environment_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NAME = re.compile(r"GATEHOOK_[A-Z0-9_]*")
STREAMS = {"GATEHOOK_AUDIT", "GATEHOOK_RECORDINGS"}
# names gatehook no longer has, which only the contract's notes of change may name
RETIRED = {"GATEHOOK_REPLIES", "GATEHOOK_DEDUPE_WINDOW_S"}
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)  # in order, so each opens where one closed
CODE = re.compile(r"`([^`\n]+)`")


def anchors(path: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
            out.add(slug)
    return out


def test_links_resolve_inside_the_repository() -> None:
    broken = []
    for doc in DOCS:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists() or (ROOT not in path.parents and path != ROOT):
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
                continue
            if anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def _read_elsewhere() -> set[str]:
    """``GATEHOOK_*`` names the compose files, the deploy files, the scripts and the tests read
    besides the settings (compose's own variables, a test's browser)."""
    names: set[str] = set()
    files = [*ROOT.glob("compose*.yaml"), *(ROOT / "deploy").rglob("*"), *(ROOT / "tests").rglob("*.py"),
             *(ROOT / "scripts").iterdir()]  # fmt: skip
    for path in files:
        if path.is_file() and "node_modules" not in path.parts:
            names |= set(NAME.findall(path.read_text(errors="replace")))
    return names


def test_every_gatehook_name_in_the_docs_is_real() -> None:
    settings = environment_names()
    elsewhere = _read_elsewhere() - settings - RETIRED
    unknown = []
    for doc in GUIDES:
        text = doc.read_text()
        for match in NAME.finditer(text):
            name, after = match.group(), text[match.end() : match.end() + 1]
            if after == "*" or name.endswith("__"):  # a group: GATEHOOK_CACHE__*
                ok = any(s.startswith(name.rstrip("*")) for s in settings)
            elif doc.name == "contract.md" and name.rstrip("_") in RETIRED:
                ok = True
            elif after == "<":  # a lane's stream: GATEHOOK_AUDIT_<i>
                ok = name.rstrip("_") in STREAMS
            else:
                ok = name in settings or name in STREAMS or name in elsewhere
            if not ok:
                unknown.append(f"{doc.relative_to(ROOT)}: {name}")
    assert not unknown, unknown


def _commands(text: str) -> list[str]:
    """The ``gatehook ...`` command lines of a document: in shell blocks (continuations
    joined, comments cut) and in inline code."""
    found = []
    for language, block in FENCE.findall(text):
        if language not in ("", "bash", "sh", "console"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r"&&|\|", line):
                part = part.strip()
                words = part.split()
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words.pop(0)  # VAR=value before the command
                if words and words[0] in ("gatehook", ".venv/bin/gatehook"):
                    found.append(" ".join(words))
    for span in CODE.findall(FENCE.sub("", text)):
        if span.startswith(("gatehook ", ".venv/bin/gatehook ")):
            found.append(span.split(" #", 1)[0])
    return found


def _check(root: Any, line: str) -> str | None:
    """None if ``line`` names an existing command with existing options, else what is wrong."""
    try:
        words = shlex.split(line)[1:]
    except ValueError as exc:
        return f"{line}: {exc}"
    # click's Group and Command (typer ships its own click): a group has ``commands``
    command = root
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        if words[0] in ("...", "NAME", "DIR"):
            return None  # a placeholder for any subcommand
        names = words[0].split("|")  # status|promote|abort: each of them
        subs = [command.commands.get(name) for name in names]
        if None in subs:
            return f"{line}: no command {words[0]!r}"
        if len(subs) > 1:  # shown for several commands: right for one of them at least
            problems = [_check(root, line.replace(words[0], name, 1)) for name in names]
            return None if None in problems else problems[0]
        command, words = subs[0], words[1:]
    if hasattr(command, "commands"):
        return None if not words else f"{line}: {command.name} needs a subcommand"
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]}
    for word in (w.strip("[]") for w in words):
        if word.startswith("-") and word not in ("-", "--"):
            option = word.split("=", 1)[0]
            if option not in options:
                return f"{line}: {command.name} has no option {option}"
    return None


def test_every_command_shown_exists_with_its_options() -> None:
    root = typer.main.get_command(app)
    assert hasattr(root, "commands")
    wrong = []
    seen = 0
    for doc in GUIDES:
        for line in _commands(doc.read_text()):
            seen += 1
            problem = _check(root, line)
            if problem:
                wrong.append(f"{doc.relative_to(ROOT)}: {problem}")
    assert seen > 30  # the guides show the CLI: the scan found it
    assert not wrong, wrong


def test_the_readme_first_screen_has_the_two_commands_and_the_diagram() -> None:
    first = "\n".join((ROOT / "README.md").read_text().splitlines()[:60])
    assert "./scripts/dev" in first
    assert "./scripts/test" in first
    assert "```mermaid" in first


def test_nothing_a_user_reads_points_outside_the_repository() -> None:
    for path in [*DOCS, *(ROOT / "src").rglob("*.py"), *(ROOT / "schemas").rglob("*.json")]:
        assert "../shared" not in path.read_text(), path


def test_the_readme_map_names_every_package() -> None:
    """README's "What is where": every path it names exists, and every package of
    src/gatehook (and each top-level folder a reader opens) is named."""
    readme = (ROOT / "README.md").read_text()
    (tree,) = [body for _, body in FENCE.findall(readme) if body.startswith("src/gatehook/")]
    named = []
    for line in tree.splitlines():
        match = re.match(r"^( {2})?([\w.]+/?)\s", line + " ")
        if match:
            named.append(("src/gatehook/" if match[1] else "") + match[2])
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, missing
    packages = {
        f"src/gatehook/{p.parent.name}/" for p in (ROOT / "src" / "gatehook").glob("*/__init__.py")
    }
    assert packages <= set(named), packages - set(named)


def test_the_architecture_names_real_modules() -> None:
    """docs/development.md's architecture (the diagram and the rules under it) names modules
    and packages of src/gatehook that exist."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = text[text.index("## Architecture") : text.index("## Choices")]
    named = set(re.findall(r"(?<![\w/])((?:[a-z_]+/)+(?:[a-z_]+\.py)?|[a-z_]+\.py)\b", section))
    src = ROOT / "src" / "gatehook"

    def exists(path: str) -> bool:
        if "/" not in path:  # a module named beside its package: somewhere in src/gatehook
            return any(src.rglob(path))
        return (src / path).exists() or (ROOT / path).exists()

    missing = sorted(p for p in named if not exists(p))
    assert len(named) > 20
    assert not missing, missing
