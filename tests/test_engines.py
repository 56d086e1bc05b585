"""One stage graph, two engines: the Snakefile's jobs equal dvc.yaml's stages (as DVC resolves
them: matrix stages expanded), and every stage lists the code it runs and the paths it names."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

# Modules that cannot change an artifact's bytes without a params value changing too: argument
# dispatch, params validation and the packages' __init__ files that only re-export names (checked
# below). Everything else a stage imports is a dep: constants.py holds the timestep grids' rule and
# diffusion/__init__.py the sampler registry, so both are.
NOT_DEPS = {"cli.py", "config.py", "__main__.py"}
RE_EXPORTS = {f"src/ldmpipe/{p}__init__.py" for p in ("", "data/", "models/", "stages/", "training/")}


def dvc_stages() -> dict[str, dict]:
    """DVC's resolved stages: name (`sweep@ddim` for matrix entries) -> cmd, deps, outs, params."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {
            st.name: {
                "cmd": " ".join(st.cmd.split()),
                "deps": [d.def_path for d in st.deps if not isinstance(d, ParamsDependency)],
                "outs": [o.def_path for o in st.outs],
                "params": [k for d in st.deps if isinstance(d, ParamsDependency) for k in d.params],
            }
            for st in repo.index.stages
        }


STAGES = dvc_stages()
ALL_OUTS = [o for s in STAGES.values() for o in s["outs"]]
STAMP = STAGES["check"]["outs"][0]  # check's output: orders prepare after it, read by no stage


def as_files(deps: list[str]) -> list[str]:
    """A folder dependency holding other stages' outputs stands for those files (as in the Snakefile)."""
    out = []
    for d in deps:
        inside = [o for o in ALL_OUTS if o.startswith(d.rstrip("/") + "/")]
        out += inside if inside and d not in ALL_OUTS else [d]
    return out


def snakemake_jobs() -> dict[str, dict]:
    """Jobs of a forced dry run: `rule` or `rule@value1-value2` (as DVC names matrix entries) -> {input, output, log, shell}."""
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--cores", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    jobs, current = {}, None
    for line in r.stdout.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            current = {"rule": m.group(1), "input": [], "output": []}
        elif current is not None and (m := re.match(r"    (input|output|log|wildcards|threads): (.*)$", line)):
            current[m.group(1)] = m.group(2).split(", ")
        elif current is not None and line.startswith("Shell command: "):
            current["shell"] = line.removeprefix("Shell command: ")
        if current is not None and "rule" in current and ("shell" in current or current["rule"] == "all"):
            values = [w.split("=", 1)[1] for w in current.get("wildcards", [])]  # in the output pattern's order
            jobs[current["rule"] + ("@" + "-".join(values) if values else "")] = current  # DVC: stage@v1-v2
            current = None if "shell" in current else current
    return jobs


def test_snakefile_jobs_equal_dvc_stages():
    """Every stage but check is a job with the same command, inputs and outputs (check: see below)."""
    jobs = snakemake_jobs()
    assert set(jobs) - {"all"} == set(STAGES) - {"check"}
    for name, stage in STAGES.items():
        if name == "check":
            continue
        job = jobs[name]
        assert sorted(job["input"]) == sorted(as_files([d for d in stage["deps"] if d != STAMP])), name
        assert sorted(job["output"]) == sorted(stage["outs"]), name
        assert len(job["log"]) == 1 and job["log"][0].startswith(f"logs/{name.split('@')[0]}")
        threads = job.get("threads", ["1"])[0]  # a dry run leaves out `threads: 1`
        assert job["shell"] == f"LDMPIPE_NUM_THREADS={threads} {stage['cmd']} 2>&1 | tee {job['log'][0]}"


def test_check_runs_first_on_every_key_in_both_engines():
    """DVC: check tracks the whole params file and is upstream of every other stage (through prepare,
    the only stage without a stage upstream). Snakemake: its onstart hook runs the same command."""
    check = STAGES["check"]
    assert check["outs"] == [STAMP] and check["cmd"] == f"ldmpipe check --params params.yaml --stamp {STAMP}"
    with __import__("dvc.repo", fromlist=["Repo"]).Repo(str(ROOT)) as repo:
        params = [d for st in repo.index.stages if st.name == "check" for d in st.deps if type(d).__name__ == "ParamsDependency"]
    assert len(params) == 1 and params[0].def_path == "params.yaml" and not params[0].params  # no keys: all of them
    roots = [n for n, s in STAGES.items() if n != "check" and not set(as_files(s["deps"])) & set(ALL_OUTS) - {STAMP}]
    assert roots == ["prepare"] and STAMP in STAGES["prepare"]["deps"]
    snakefile = (ROOT / "Snakefile").read_text()
    assert "onstart:" in snakefile and 'shell(f"ldmpipe check --params params.yaml --no-environment --stamp {_STAMP}")' in snakefile


@pytest.mark.parametrize("name", sorted(STAGES))
def test_command_paths_are_declared(name):
    """Every path the command names is a dep or an output, and every data dep/out is named."""
    stage = STAGES[name]
    args = shlex.split(stage["cmd"])
    named = {a for a in args if "/" in a and not a.startswith("-")}
    declared = set(stage["deps"]) | set(stage["outs"])
    folders = {a for a in named - declared if not re.search(r"\.\w+$", a)}  # DVCLive output folders
    assert named - folders <= declared, named - declared
    for d in folders:
        assert any(p.startswith(d + "/") for p in stage["outs"]), d
    data_paths = {p for p in declared if not p.startswith("src/")} - ({STAMP} if name != "check" else set())
    assert data_paths <= named | {p for p in data_paths for d in folders if p.startswith(d + "/")}
    assert args[:2] == ["ldmpipe", name.split("@")[0].replace("_", "-")] and "--params" in args


@pytest.mark.parametrize("module", sorted({n.split("@")[0] for n in STAGES}))
def test_stage_code_is_a_dep(module):
    """Each stage's deps list every ldmpipe module it imports (except NOT_DEPS)."""
    code = (
        "import sys, importlib; importlib.import_module('ldmpipe.stages.' + sys.argv[1]);"
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('ldmpipe') and m.__file__))"
    )
    r = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True, check=True)
    imported = {str(Path(f).resolve().relative_to(ROOT)) for f in r.stdout.split()}
    needed = {p for p in imported if Path(p).name not in NOT_DEPS and p not in RE_EXPORTS}
    for name in (n for n in STAGES if n.split("@")[0] == module):
        assert needed <= set(STAGES[name]["deps"]), sorted(needed - set(STAGES[name]["deps"]))


def test_the_init_files_left_out_of_deps_only_re_export():
    """A RE_EXPORTS file holds a docstring, imports, ``__all__`` and ``__version__``, nothing that runs."""
    import ast

    for path in sorted(RE_EXPORTS):
        for node in ast.parse((ROOT / path).read_text()).body:
            names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            assert isinstance(node, (ast.Import, ast.ImportFrom)) or docstring or names in (["__all__"], ["__version__"]), (
                f"{path}:{node.lineno} does more than re-export: list the file in the deps of the stages that import it")


def test_the_committed_lock_records_only_stages_of_dvc_yaml():
    """DVC never prunes the lock entry of a stage that left dvc.yaml (a renamed matrix entry, say)."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(STAGES), sorted(set(lock) ^ set(STAGES))


def test_params_listed_exist():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, stage in STAGES.items():
        for key in stage["params"]:
            node = params
            for part in key.split("."):
                assert part in node, f"{name}: {key}"
                node = node[part]
