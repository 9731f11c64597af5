"""What every CLI test needs: run ``assay`` in process and check a user error (exit 2, ``Error:`` first, a ``Fix:``
line, no traceback, the expected fragments in the message, whitespace-insensitive)."""

from __future__ import annotations

from assay.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``assay ARGS``."""
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("Error:") and "Fix:" in err and "Traceback" not in err, err
    flat = " ".join(err.split())
    for fragment in fragments:
        assert fragment in flat, (fragment, flat)
