"""The house style is checked, not hoped for: ruff on the code, snakefmt on the workflow."""

import subprocess

import pytest
from conftest import REPO, tool


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "src", "tests", "workflow/scripts", "benchmarks"],
        ["snakefmt", "--check", "Snakefile", "workflow/rules"],
    ],
)
def test_clean(cmd):
    exe = tool(cmd[0])
    if exe is None:
        pytest.skip(f"{cmd[0]} is not installed (pip install -e '.[test]')")
    proc = subprocess.run([exe, *cmd[1:]], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
