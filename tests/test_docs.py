"""Documentation that cannot rot: docs/cli.md is exactly what docs/gen_cli.py generates from the CLI
(options, types, defaults, help text, help panels); README's first commands are the two set-up commands;
the architecture page names every module."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

import pytest
import typer

from assay.cli import app

ROOT = Path(__file__).parents[1]
REGENERATE = ".venv/bin/python docs/gen_cli.py > docs/cli.md"


def _generator():
    """docs/gen_cli.py imported as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_cli", ROOT / "docs" / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date():
    """Any difference between the committed page and the regenerated one fails, with the diff."""
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    generated = _generator().cli_reference()
    if committed != generated:
        diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True), generated.splitlines(keepends=True),
                                            "docs/cli.md (committed)", "docs/cli.md (generated from the CLI)"))
        pytest.fail(f"docs/cli.md is stale: regenerate it with `{REGENERATE}`\n{diff}", pytrace=False)


@pytest.mark.parametrize(("name", "field", "value"), [
    ("ece_bins", "default", 10), ("seed", "help", "Another text."), ("confidence", "rich_help_panel", "Elsewhere"),
    ("threads", "metavar", "<count>"),
])
def test_cli_reference_changes_with_a_default_help_text_type_or_panel(name, field, value):
    """The comparison above can fail: one edited parameter of evaluate changes the generated page."""
    generator = _generator()
    before = generator.cli_reference()
    group = typer.main.get_command(app)
    params = {p.name: p for p in group.commands["evaluate"].params}
    setattr(params[name], field, value)
    assert generator.cli_reference(group) != before
    assert generator.cli_reference() == before


def test_every_cli_command_and_option_is_documented():
    """Independent of the generator: every command and every flag appears on the page."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    command = typer.main.get_command(app)
    for name, sub in command.commands.items():
        assert f"## `assay {name}`" in text, f"command {name} is undocumented"
        for param in sub.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}`" in text, f"option {opt} of {name} is undocumented in docs/cli.md"


def test_cli_reference_shows_panels_types_and_defaults():
    """Hand-checked rows: evaluate's --n-bootstrap sits under Statistics with the CLI's type and default,
    --data is required, --outputs lists its choices."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    evaluate = text.split("## `assay evaluate`")[1].split("\n## ")[0]
    statistics = evaluate.split("### Statistics")[1].split("\n### ")[0]
    assert "| `--n-bootstrap` | `<int>` | `1000` |" in statistics
    assert "| `--data` / `-d` | `<str>` | required |" in evaluate.split("### Data")[1].split("\n### ")[0]
    assert "`<logits\\|probabilities>` | `logits` |" in evaluate


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
