"""Shards of a global batch, without a process group: each rank's slice and its random draws are
the corresponding part of what one process would have drawn."""

from __future__ import annotations

import os

import pytest
import torch

from conftest import write_params
from ldmpipe.config import ConfigError, load_params
from ldmpipe.distributed import WHOLE, Shard


def test_slices_of_two_ranks_make_the_global_batch():
    batch = torch.arange(8)
    parts = [Shard(r, 2).take(batch) for r in range(2)]
    assert torch.equal(torch.cat(parts), batch) and WHOLE.take(batch) is batch


@pytest.mark.parametrize("world", [1, 2, 4])
def test_each_sample_gets_the_same_noise_for_any_number_of_ranks(world):
    gen = torch.Generator().manual_seed(3)
    whole_t, whole = WHOLE.randint(100, 8, gen), WHOLE.randn((8, 2, 3), gen)  # t, then eps
    ts, eps = [], []
    for rank in range(world):
        gen = torch.Generator().manual_seed(3)  # every rank holds the same generator
        shard = Shard(rank, world)
        ts.append(shard.randint(100, 8 // world, gen))
        eps.append(shard.randn((8 // world, 2, 3), gen))
    assert torch.equal(torch.cat(ts), whole_t) and torch.equal(torch.cat(eps), whole)


def test_one_process_draws_what_the_single_process_code_drew():
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    t = torch.randint(0, 10, (4,), generator=gen_a, dtype=torch.long)
    eps = torch.randn((4, 3), generator=gen_a, dtype=torch.float32)
    assert torch.equal(WHOLE.randint(10, 4, gen_b), t) and torch.equal(WHOLE.randn((4, 3), gen_b), eps)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["train"].update(nproc=2, batch_size=31), r"train.batch_size must be divisible by train.nproc \(2\), got 31"),
        (lambda p: p["train"].update(nproc=3), r"vae.batch_size must be divisible by train.nproc \(3\), got 16"),
        (lambda p: (p["train"].update(nproc=2), p["vae"].update(disc_weight=0.1)), r"vae.disc_weight must be 0 when train.nproc > 1"),
    ],
)
def test_data_parallel_params_are_checked_before_any_work(tmp_path, tiny_params, change, message):
    change(tiny_params)
    with pytest.raises(ConfigError, match=message):
        load_params(write_params(tmp_path / "p.yaml", tiny_params))


def fake_torchrun(monkeypatch, lines: dict[int, str], exits: dict[int, int]) -> None:
    """Replace torchrun's `run` by one whose workers (ranks of ``exits``) fail: rank r writes
    ``lines[r]`` where `launch` collects worker errors, if it has one, and exits with ``exits[r]``."""
    import logging
    from pathlib import Path

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def run(_config):
        logging.getLogger("torch.distributed.elastic.multiprocessing.api").error("failed (exitcode: 1) local_rank: 0")
        for rank, line in lines.items():
            Path(os.environ["LDMPIPE_ERROR_DIR"], f"rank{rank}").write_text(line + "\n")
        failures = {rank: ProcessFailure(rank, 1000 + rank, code, "<none>") for rank, code in exits.items()}
        raise ChildFailedError("ldmpipe", failures)

    monkeypatch.setattr("torch.distributed.run.run", run)


@pytest.mark.parametrize(
    ("lines", "exits", "stderr", "code"),
    [  # the same error on every rank: printed once
        ({0: "ldmpipe sample: error: x: bad", 1: "ldmpipe sample: error: x: bad"}, {0: 1, 1: 1}, ["ldmpipe sample: error: x: bad"], 1),
        # different errors: each once, in rank order
        ({1: "ldmpipe sample: error: b", 0: "ldmpipe sample: error: a"}, {0: 2, 1: 2}, ["ldmpipe sample: error: a", "ldmpipe sample: error: b"], 2),
        # no worker reported (a traceback, or a signal): each failure named, a signal exits 128 + N
        ({}, {0: -9, 1: 1}, ["ldmpipe sample: error: worker 0 was killed by SIGKILL", "ldmpipe sample: error: worker 1 exited with code 1"], 137),
    ],
)
def test_the_launcher_prints_each_worker_error_once(monkeypatch, capfd, lines, exits, stderr, code):
    from ldmpipe import cli

    fake_torchrun(monkeypatch, lines, exits)
    returned = cli.launch(["sample"], 2, "sample")
    assert capfd.readouterr().err.splitlines() == stderr  # and none of torchrun's log lines
    assert returned == code  # the first failure's (rank 0's here)
    assert "LDMPIPE_ERROR_DIR" not in os.environ


def test_a_rendezvous_failure_is_one_line(monkeypatch, capfd):
    """torchrun raises a RendezvousError, not a ChildFailedError, when its workers never meet (no free
    port, a timeout): one line naming it, exit 1, and the error directory is cleaned up."""
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError

    from ldmpipe import cli

    def run(_config):
        raise RendezvousConnectionError("The connection to the C10d store has failed.")

    monkeypatch.setattr("torch.distributed.run.run", run)
    assert cli.launch(["train-diffusion"], 2, "train-diffusion") == 1
    assert capfd.readouterr().err.splitlines() == [
        "ldmpipe train-diffusion: error: torchrun could not start 2 workers "
        "(RendezvousConnectionError: The connection to the C10d store has failed.)"]  # fmt: skip
    assert "LDMPIPE_ERROR_DIR" not in os.environ


def test_a_worker_leaves_its_error_for_the_launcher(monkeypatch, tmp_path, capsys):
    from ldmpipe import cli

    monkeypatch.setenv("LDMPIPE_ERROR_DIR", str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    cli.report_error("sample", ValueError("x: bad"))
    assert capsys.readouterr().err == ""
    assert (tmp_path / "rank1").read_text() == "ldmpipe sample: error: x: bad\n"
    monkeypatch.delenv("LDMPIPE_ERROR_DIR")  # a worker of a torchrun started by hand: prints as usual
    cli.report_error("sample", ValueError("x: bad"))
    assert capsys.readouterr().err == "ldmpipe sample: error: x: bad\n"
