"""``ldmpipe``: one subcommand per pipeline stage, plus ``check``.

Every stage takes ``--params`` and its input/output paths as options; the paths live in one
place, ``dvc.yaml``, from which the Snakefile builds its rules too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
from pathlib import Path

from . import __version__
from .config import ConfigError, load_params

# subcommand -> (module under ldmpipe.stages, one-line help)
STAGES = {
    "prepare": ("prepare", "generate or load the dataset; write uint8 train/val arrays"),
    "train-vae": ("train_vae", "train the KL or VQ autoencoder; write weights, recon metrics and a grid"),
    "encode": ("encode", "encode images to latents; compute the latent scale factor and check unit std"),
    "train-evaluator": ("train_evaluator", "train the frozen classifier used by FID/IS; write reference stats"),
    "evaluate-vae": ("evaluate_vae", "reconstruction MSE/PSNR/SSIM/rFID (and codebook use) and a latent PCA plot"),
    "train-diffusion": ("train_diffusion", "train the latent UNet (EMA weights, DVCLive curves)"),
    "sample": ("sample", "sample images with DDPM/DDIM on the EMA weights and decode them"),
    "sweep": ("sweep", "FID and IS against sampling steps/NFE for one sampler and spacing, with small grids"),
    "sweep-reference": ("sweep_reference", "the sweep's reference row: DDPM with all T steps (or as many as asked)"),
    "sweep-report": ("sweep_report", "gather the sweep into reports/sweep.csv and the FID-vs-NFE plot"),
    "guidance-sweep": ("guidance_sweep", "FID and class accuracy of a class model against the guidance scale, with grids"),
    "evaluate": ("evaluate", "FID and IS against the reference, with the real-vs-real floor"),
    "report": ("report", "write the report, as Markdown and as one self-contained HTML page"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``command``, only that subcommand gets its arguments, so that a
    command imports its own stage module, not every stage's (pandas, scipy, ...: about 0.4 s each run)."""
    parser = argparse.ArgumentParser(prog="ldmpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ldmpipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check", help="validate a params file without running anything (dvc.yaml's first stage)")
    if command in (None, "check"):
        importlib.import_module("ldmpipe.stages.check").add_arguments(check)
    tpl = sub.add_parser("plots-template", help="page template for dvc plots show/diff --html-template that renders offline")
    tpl.add_argument("out", help="the template to write (.html)")
    tpl.add_argument("--scripts", nargs=3, metavar=("VEGA", "VEGA_LITE", "VEGA_EMBED"),
                     help="these scripts instead of the copies the snakemake package ships")  # fmt: skip
    cmp = sub.add_parser("compare", help="params that differ and main metrics across commits and experiments")
    cmp.add_argument("revs", nargs="*", metavar="REV", help="git revisions or experiment names (default: recent)")
    cmp.add_argument("-n", "--num", type=int, default=5, help="without REVs: how many commits back (default 5)")
    cmp.add_argument("--repo", default=".", help="the DVC repository (default: .)")
    cmp.add_argument("--out", default="reports/compare.md", help="Markdown table (default: reports/compare.md)")
    cmp.add_argument("--figure", default="reports/figures/compare_fid.png", help="FID plot")
    exp = sub.add_parser("export", help="write a diffusers pipeline folder (DiffusionPipeline.from_pretrained loads it)")
    exp.add_argument("--params", default="params.yaml",
                     help="params file: sample.* gives the scheduler and default steps/eta (default: %(default)s)")  # fmt: skip
    exp.add_argument("--diffusion", default="data/diffusion/model.safetensors", help="EMA UNet weights (default: %(default)s)")
    exp.add_argument("--vae", default="data/vae/model.safetensors", help="autoencoder weights (default: %(default)s)")
    exp.add_argument("--out", required=True, help="output folder (replaced if it holds an earlier export)")
    for name, (module, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        if command in (None, name):
            importlib.import_module(f"ldmpipe.stages.{module}").add_arguments(p)
    return parser


# stages that train data-parallel under torchrun when train.nproc > 1
DATA_PARALLEL = {"train-vae", "train-evaluator", "train-diffusion"}


def missing_input(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first input path (an option whose help starts with "input:") that does not exist, if any:
    checked before torchrun starts N workers that would each report it."""
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for action in commands[args.command]._actions:
        value = getattr(args, action.dest, None) if (action.help or "").startswith("input:") else None
        for path in [value] if isinstance(value, str) else value or []:
            if not os.path.exists(path):
                return path
    return None


ERROR_DIR_ENV = "LDMPIPE_ERROR_DIR"  # set by `launch`: each worker writes its one-line error there


def launch(argv: list[str], nproc: int, command: str) -> int:
    """Rerun this very command as ``torchrun --standalone --nproc-per-node N -m ldmpipe ...``.

    Each worker writes its one-line error to a file instead of printing it, and the launcher prints
    the distinct lines once, in rank order, instead of N copies plus torchrun's own log lines. A
    worker that left no line (a traceback, already printed, or a signal) is named with its exit.
    Returns the first failure's exit code (128 + N for signal N).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # ldmpipe sets each worker's threads itself
    os.environ["LDMPIPE_LAUNCHER_PID"] = str(os.getpid())  # workers die with this process
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    with tempfile.TemporaryDirectory(prefix="ldmpipe-errors-") as errors:
        os.environ[ERROR_DIR_ENV] = errors
        elastic.setLevel(logging.CRITICAL)  # its "failed (exitcode: 1) local_rank: 0 ..." lines
        try:
            run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "ldmpipe", *argv]))
        except ChildFailedError as e:
            reported = sorted(Path(errors).glob("rank*"), key=lambda p: int(p.name[4:]))
            lines = [p.read_text(encoding="utf-8").strip() for p in reported]
            if not lines:  # no worker failed cleanly: a crash (its traceback is above) or a signal
                lines = [f"ldmpipe {command}: error: worker {rank} "
                         + (f"was killed by {f.signal_name()}" if f.exitcode < 0 else f"exited with code {f.exitcode}")
                         for rank, f in sorted(e.failures.items())]  # fmt: skip
            for line in dict.fromkeys(lines):
                print(line, file=sys.stderr)
            code = e.get_first_failure()[1].exitcode
            return 128 - code if code < 0 else code or 1  # a signal N exits 128 + N, as in a shell
        except RendezvousError as e:  # the workers never met (no free port, a timeout): nothing ran
            print(f"ldmpipe {command}: error: torchrun could not start {nproc} workers ({type(e).__name__}: {e})",
                  file=sys.stderr)  # fmt: skip
            return 1
        finally:
            elastic.setLevel(level)
            del os.environ[ERROR_DIR_ENV]
    return 0


def report_error(command: str, error: Exception) -> None:
    """One line on stderr; a worker of `launch` leaves it in a file for the launcher to print once."""
    line = f"ldmpipe {command}: error: {error}"
    if (errors := os.environ.get(ERROR_DIR_ENV)) and "RANK" in os.environ:
        Path(errors, f"rank{os.environ['RANK']}").write_text(line + "\n", encoding="utf-8")
    else:
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else None)
    args = parser.parse_args(argv)
    from .data import DataError
    from .io import ArtifactError
    from .training import NonFiniteLossError

    try:
        if args.command == "check":
            from .stages import check

            check.run(args)
            return 0
        if args.command == "plots-template":
            from .plots_template import write_template

            write_template(args.out, args.scripts)
            print(f"plots-template: wrote {args.out}; use it with dvc plots show --html-template {args.out}")
            return 0
        if args.command == "compare":
            from .compare import compare

            compare(args.repo, args.revs, args.num, args.out, args.figure)
            return 0
        params = load_params(args.params)
        copies = args.command == "train-vae" and params.vae.kind == "pretrained"  # trains nothing: one process
        if args.command in DATA_PARALLEL and params.train.nproc > 1 and not copies and "LOCAL_RANK" not in os.environ:
            if (path := missing_input(parser, args)) is not None:
                raise ArtifactError(f"{path}: file not found")
            return launch(argv, params.train.nproc, args.command)
        if args.command == "export":
            from .export import export_pipeline

            index = export_pipeline(args.diffusion, args.vae, args.out, params.sample)
            guided = (f", autoguidance guide (default autoguidance_scale {index['default_autoguidance']:g})"
                      if index["guide_unet"][0] else "")  # fmt: skip
            print(f"export: {args.out} ({index['scheduler'][1]}, {index['default_steps']} steps{guided}; "
                  f"DiffusionPipeline.from_pretrained({args.out!r}, trust_remote_code=True))")  # fmt: skip
            if index["note"]:
                print(f"export: note: {index['note']}")
            return 0
        module = importlib.import_module(f"ldmpipe.stages.{STAGES[args.command][0]}")
        module.run(args, params)
        if args.command in DATA_PARALLEL:
            from .distributed import shutdown

            shutdown()  # leave the process group (a no-op for one process)
    except (ConfigError, DataError) as e:
        report_error(args.command, e)
        return 2
    except (ArtifactError, NonFiniteLossError) as e:
        # Missing or unreadable inputs, or a diverged run: one line, no traceback.
        report_error(args.command, e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
