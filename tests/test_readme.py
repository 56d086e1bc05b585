"""The README's quickstart is what CI runs: .ci/run holds the README's own commands."""

from __future__ import annotations

import re

from conftest import ROOT


def readme_commands() -> set[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return {line.split("  #")[0].strip() for b in blocks for line in b.splitlines() if line.strip()}


def test_ci_runs_the_readme_install_and_test_commands():
    lines = [l.strip() for l in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [l for l in lines if l and not l.startswith(("#", "set ", "cd ")) and l != "fi"]
    assert commands and set(commands) <= readme_commands(), set(commands) - readme_commands()
    assert any("pip install -e" in c for c in commands) and "pytest" in commands


def test_readme_quickstart_runs_both_engines():
    cmds = readme_commands()
    assert {"dvc repro", "snakemake --cores 2", "pytest"} <= cmds
