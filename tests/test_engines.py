"""One stage graph, two engines: the Snakefile's rules equal dvc.yaml's stages, and every stage
lists the code it runs and the paths its command names."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# Modules that cannot change an artifact's bytes without a params value changing too: package
# re-exports, argument dispatch and params validation. Everything else a stage imports is a dep.
NOT_DEPS = {"cli.py", "config.py", "constants.py", "__main__.py"}


def paths(entries) -> list[str]:
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def outputs(stage: dict) -> list[str]:
    return paths(stage.get("outs")) + paths(stage.get("metrics")) + paths(stage.get("plots"))


def snakemake_jobs() -> dict[str, dict]:
    """Rules of a forced dry run: name -> {input, output, log, shell}."""
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--cores", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    jobs, current = {}, None
    for line in r.stdout.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            current = jobs.setdefault(m.group(1), {"input": [], "output": []})
        elif current is not None and (m := re.match(r"    (input|output|log): (.*)$", line)):
            current[m.group(1)] = m.group(2).split(", ")
        elif current is not None and line.startswith("Shell command: "):
            current["shell"] = line.removeprefix("Shell command: ")
    return jobs


def test_snakefile_rules_equal_dvc_stages():
    jobs = snakemake_jobs()
    assert set(jobs) - {"all"} == set(DVC)
    for name, stage in DVC.items():
        job = jobs[name]
        assert sorted(job["input"]) == sorted(paths(stage.get("deps"))), name
        assert sorted(job["output"]) == sorted(outputs(stage)), name
        assert job["log"] == [f"logs/{name}.log"]
        assert job["shell"] == " ".join(stage["cmd"].split()) + f" 2>&1 | tee logs/{name}.log"


@pytest.mark.parametrize("name", sorted(DVC))
def test_command_paths_are_declared(name):
    """Every path the command names is a dep or an output, and every data dep/out is named."""
    stage = DVC[name]
    args = shlex.split(stage["cmd"])
    named = {a for a in args if "/" in a and not a.startswith("-")}
    declared = set(paths(stage.get("deps"))) | set(outputs(stage))
    directories = {a for a in named if not re.search(r"\.\w+$", a)}  # DVCLive folders
    assert named - directories <= declared, named - declared
    for d in directories:
        assert any(p.startswith(d + "/") for p in outputs(stage)), d
    data_paths = {p for p in declared if not p.startswith("src/")}
    assert data_paths <= named | {p for p in data_paths for d in directories if p.startswith(d + "/")}
    assert args[:2] == ["ldmpipe", name.replace("_", "-")] and "--params" in args


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_code_is_a_dep(name):
    """Each stage's deps list every ldmpipe module it imports (except NOT_DEPS and __init__)."""
    code = (
        "import sys, importlib; importlib.import_module('ldmpipe.stages.' + sys.argv[1]);"
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('ldmpipe') and m.__file__))"
    )
    r = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, check=True)
    src = ROOT / "src"
    imported = {str(__import__("pathlib").Path(f).resolve().relative_to(src.parent)) for f in r.stdout.split()}
    needed = {p for p in imported if p.rsplit("/", 1)[-1] not in NOT_DEPS | {"__init__.py"}}
    assert needed <= set(paths(DVC[name].get("deps"))), sorted(needed - set(paths(DVC[name]["deps"])))


def test_params_listed_are_sections_or_top_level_keys():
    top = set(yaml.safe_load((ROOT / "params.yaml").read_text()))
    for name, stage in DVC.items():
        assert set(stage.get("params", [])) <= top, name
