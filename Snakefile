# Snakemake engine for ldmpipe. The stage graph is not repeated here: every rule is built from
# dvc.yaml (the one source of truth) - same name, command, inputs and outputs - so the two
# engines cannot drift apart. Each stage reads params.yaml itself; `params:` below holds the
# values of the keys the stage reads, so that editing one reruns just the affected rules.
#
#   snakemake --cores 2            # the whole pipeline
#   snakemake --cores 2 sample     # up to one stage
#   snakemake --report report.html # Snakemake's own report of a finished run
#   snakemake --profile profiles/slurm   # on a SLURM cluster (README: Run on a cluster)
#
# dvc.yaml features translated here: a `matrix` stage becomes one rule with a wildcard per matrix
# key (`${item.key}` -> `{key}`, values from the matrix or from params.yaml; DVC's entry
# `sweep@ddim-leading` is the job with wildcards sampler=ddim, spacing=leading, each constrained to
# its listed values so that `{sampler}-{spacing}` splits one way only), and a dependency on a folder
# holding other stages' outputs becomes a dependency on those output files.
import itertools
import re
import sys

import yaml

from ldmpipe.config import ConfigError, load_params

configfile: "params.yaml"

try:  # every key of the file, validated as the workflow is parsed: before any job is chosen, run or removed
    load_params("params.yaml")
except ConfigError as e:
    sys.exit(f"ldmpipe check: error: {e}")

report: "captions/workflow.rst"

DVC = yaml.safe_load(open(workflow.source_path("dvc.yaml")))["stages"]

# dvc.yaml's `check` stage (every key of params.yaml, validated before any stage runs) is no rule here:
# a rule that read every param would rerun with any of them and, its output being newer, make every
# job downstream rerun too. The file is validated at parse time (above), and the same command runs
# before any job to write the same stamp; with --no-environment, as a cluster's head node may lack the
# device or paths its jobs have (each stage checks its own machine when it starts).
_STAMP = DVC.pop("check")["outs"][0]


onstart:
    shell(f"ldmpipe check --params params.yaml --no-environment --stamp {_STAMP}")

# Engine-specific settings, not graph: threads, memory, runtime and GPUs per rule, declared in
# resources.yaml (read here, at parse time; nothing reads workflow.cores, so `--executor slurm`
# needs no --cores). The rule's {threads} reach the stage as LDMPIPE_NUM_THREADS.
_RES = yaml.safe_load(open(workflow.source_path("resources.yaml")))


def resources_of(name):
    """The rule's resources: resources.yaml's defaults updated with its own entry (`${a.b}` looked up)."""
    return {k: lookup(v) for k, v in {**_RES["default"], **(_RES["rules"].get(name) or {})}.items()}


# Snakemake's report (`snakemake --report report.html`): every metric and plot that dvc.yaml declares,
# and the HTML report, under its stage's category, captioned by captions/<stage>.rst (matrix entries
# get one subcategory each). Presentation only: the graph is still dvc.yaml's.
CATEGORIES = {
    "prepare": "Data",
    "train_vae": "Autoencoder",
    "encode": "Autoencoder",
    "evaluate_vae": "Autoencoder",
    "train_evaluator": "Evaluator",
    "train_diffusion": "Diffusion model",
    "sample": "Samples and metrics",
    "evaluate": "Samples and metrics",
    "sweep": "Sampler sweep",
    "sweep_reference": "Sampler sweep",
    "sweep_report": "Sampler sweep",
    "guidance_sweep": "Guidance sweep",
    "report": "Report",
}


def lookup(value):
    """`${a.b}` -> config['a']['b'] (as DVC resolves params in dvc.yaml); anything else unchanged."""
    m = re.fullmatch(r"\$\{([\w.]+)\}", str(value))
    if not m:
        return value
    node = config
    for key in m.group(1).split("."):
        node = node[key]
    return node


def paths(entries):
    """Paths of a dvc.yaml deps/outs/metrics/plots list (items are 'path' or {'path': {...}})."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def wildcarded(text):
    """`${item.sampler}` -> `{sampler}` (a Snakemake wildcard)."""
    return re.sub(r"\$\{item\.(\w+)\}", r"{\1}", text)


def matrix(stage):
    """Matrix key -> list of values (empty for a plain stage)."""
    out = {}
    for key, values in (stage.get("matrix") or {}).items():
        out[key] = [str(v) for v in lookup(values)]
    return out


def outputs(stage):
    return [wildcarded(p) for p in paths(stage.get("outs")) + paths(stage.get("metrics")) + paths(stage.get("plots"))]


def marked_outputs(name, stage):
    """outputs(stage), its metrics, plots and HTML pages flagged for Snakemake's report."""
    shown = {wildcarded(p) for p in paths(stage.get("metrics")) + paths(stage.get("plots"))}
    sub = " ".join("{" + k + "}" for k in matrix(stage)) or None
    flag = lambda p: report(p, caption=f"captions/{name}.rst", category=CATEGORIES[name], subcategory=sub)
    return [flag(p) if p in shown or p.endswith(".html") else p for p in outputs(stage)]


def concrete_outputs(stage):
    m = matrix(stage)
    combos = [dict(zip(m, c)) for c in itertools.product(*m.values())] if m else [{}]
    return [p.format(**c) for c in combos for p in outputs(stage)]


ALL_OUTPUTS = [p for s in DVC.values() for p in concrete_outputs(s)]


def inputs(stage):
    """A folder dependency that holds other stages' outputs stands for those files (the check stamp,
    written by onstart, is no input)."""
    result = []
    for dep in map(wildcarded, [p for p in paths(stage.get("deps")) if p != _STAMP]):
        inside = [p for p in ALL_OUTPUTS if p.startswith(dep.rstrip("/") + "/")]
        result += inside if inside and dep not in ALL_OUTPUTS else [dep]
    return result


def param_values(keys):
    """The current values of the params a stage reads, e.g. ['seed', 'sample'] -> {...}."""
    values = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


rule all:
    input:
        ALL_OUTPUTS,


for _name, _stage in DVC.items():
    _m = matrix(_stage)
    _cmd = wildcarded(" ".join(_stage["cmd"].split()))

    rule:
        name:
            _name
        input:
            inputs(_stage),
        output:
            marked_outputs(_name, _stage),
        params:
            # bound here: a `shell:` expression is evaluated after this loop ends
            cmd=lambda wildcards, c=_cmd: c.format(**wildcards),
            values=param_values(_stage.get("params", [])),
        log:
            "logs/" + _name + "".join("-{" + k + "}" for k in _m) + ".log",
        wildcard_constraints:
            **{k: "|".join(map(re.escape, v)) for k, v in _m.items()},
        threads: resources_of(_name)["threads"]
        resources:
            **{k: v for k, v in resources_of(_name).items() if k != "threads"},
        shell:
            "LDMPIPE_NUM_THREADS={threads} {params.cmd} 2>&1 | tee {log}"
