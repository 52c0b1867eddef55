"""Assertions shared by the test files: an error is one line that says what to fix."""

from __future__ import annotations

import pytest


def cli_error(result, *fragments: str) -> str:
    """A CLI run (typer's CliRunner) that failed with exit code 1 and one ``error:`` line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "Aborted" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def one_line(exc: pytest.ExceptionInfo, *fragments: str) -> str:
    """A library exception whose message is one line holding every fragment."""
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def assert_matches(result, logits, decisions: dict, atol: float = 1e-4) -> None:
    """An ``InferResult`` that is the reference's: every decision equal, logits within ``atol``."""
    import numpy as np

    for key, want in decisions.items():
        np.testing.assert_array_equal(getattr(result, key), want, err_msg=key)
    np.testing.assert_allclose(result.logits, logits, atol=atol)
