"""The house style is checked, not hoped for: ruff's linter and formatter on the code, snakefmt on the
workflow, a README that stays a front door with links that resolve."""

import re
import subprocess

import pytest
from conftest import REPO, tool


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", "src", "tests", "workflow/scripts", "benchmarks"],
        ["ruff", "format", "--check", "src", "tests", "workflow/scripts", "benchmarks"],
        ["snakefmt", "--check", "Snakefile", "workflow/rules"],
    ],
)
def test_clean(cmd):
    exe = tool(cmd[0])
    if exe is None:
        pytest.skip(f"{cmd[0]} is not installed (pip install -e '.[test]')")
    proc = subprocess.run([exe, *cmd[1:]], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_readme_is_a_front_door_and_its_links_resolve():
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= 180, "README.md is the front door: move depth into docs/"
    broken = []
    for md in [readme, REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", md.read_text()):
            if target.startswith(("http://", "https://", "mailto:", "#")):
                continue
            if not (md.parent / target.split("#")[0]).exists():
                broken.append(f"{md.relative_to(REPO)}: {target}")
    assert not broken, broken
