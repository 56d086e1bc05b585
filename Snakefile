# Snakemake engine for ldmpipe. The stage graph is not repeated here: every rule is built from
# dvc.yaml (the one source of truth) - same name, command, inputs and outputs - so the two
# engines cannot drift apart. Each stage reads params.yaml itself; `params:` below holds the
# values of the keys the stage reads, so that editing one reruns just the affected rules.
#
#   snakemake --cores 2            # the whole pipeline
#   snakemake --cores 2 sample     # up to one stage
import yaml

configfile: "params.yaml"

DVC = yaml.safe_load(open(workflow.source_path("dvc.yaml")))["stages"]

# Engine-specific settings, not graph: torch stages use all cores (their CPU results depend on the
# thread count, which ldmpipe fixes itself), and the diffusion training rule asks for the GPU.
HEAVY = {"train_vae", "encode", "train_evaluator", "train_diffusion", "sample", "evaluate"}
RESOURCES = {"train_diffusion": {"gpu": 1}}


def paths(entries):
    """Paths of a dvc.yaml deps/outs/metrics/plots list (items are 'path' or {'path': {...}})."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries or []]


def param_values(keys):
    """The current values of the params a stage reads, e.g. ['seed', 'sample'] -> {...}."""
    return {k: config[k] for k in keys}


rule all:
    input:
        [p for s in DVC.values() for p in paths(s.get("outs")) + paths(s.get("metrics")) + paths(s.get("plots"))],


for _name, _stage in DVC.items():

    rule:
        name:
            _name
        input:
            paths(_stage.get("deps")),
        output:
            paths(_stage.get("outs")) + paths(_stage.get("metrics")) + paths(_stage.get("plots")),
        params:
            # the command is bound here: a `shell:` expression is evaluated after this loop ends
            cmd=" ".join(_stage["cmd"].split()),
            values=param_values(_stage.get("params", [])),
        log:
            f"logs/{_name}.log",
        threads: workflow.cores if _name in HEAVY else 1
        resources:
            **RESOURCES.get(_name, {}),
        shell:
            "{params.cmd} 2>&1 | tee {log}"
