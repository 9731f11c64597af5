"""Documentation that cannot rot: every CLI command and option is in docs/cli.md; README's first
commands are the two set-up commands; the architecture page names every module."""

from __future__ import annotations

from pathlib import Path

import typer

from assay.cli import app

ROOT = Path(__file__).parents[1]


def test_every_cli_command_and_option_is_documented():
    text = (ROOT / "docs" / "cli.md").read_text()
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        assert f"## `assay {name}`" in text, f"command {name} is undocumented"
        for param in sub.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}`" in text, f"option {opt} of {name} is undocumented in docs/cli.md"


def test_readme_starts_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_architecture_page_names_every_module():
    text = (ROOT / "docs" / "architecture.md").read_text()
    src = ROOT / "src" / "assay"
    for path in src.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        rel = path.relative_to(src).as_posix()
        assert f"`{rel}`" in text, f"{rel} is not described in docs/architecture.md"
