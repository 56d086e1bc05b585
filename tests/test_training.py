"""The generic training loop: determinism, EMA, batches, and the non-finite guard."""

from __future__ import annotations

import pytest
import torch

from ldmpipe.training import EMA, NonFiniteLossError, TrainSettings, batch_indices, train_loop


def fit(seed: int, steps: int = 20, lr: float = 1e-2, ema: float | None = 0.9, snapshot: int | None = None, ckpt=None):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1))
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 4, generator=gen), torch.randn(64, 1, generator=gen)
    batches = batch_indices(64, 8, gen)

    def loss_fn(step):
        idx = next(batches)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        return loss, {"loss": loss.item()}

    logs = []
    settings = TrainSettings(steps=steps, lr=lr, warmup_steps=5, grad_clip=1.0, ema_decay=ema, log_every=5,
                             ema_snapshot_step=snapshot)  # fmt: skip
    out = train_loop(model, loss_fn, settings, log=lambda s, m: logs.append((s, m)), checkpointing=ckpt,
                     extra_state={"generator": gen, "batches": batches})  # fmt: skip
    return model, out, logs


def test_same_seed_same_weights():
    (a, ea, la), (b, eb, lb) = fit(0), fit(0)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(ea.model.parameters(), eb.model.parameters()):
        assert torch.equal(p, q)
    assert la == lb and [s for s, _ in la] == [5, 10, 15, 20]
    assert not torch.equal(next(fit(1)[0].parameters()), next(a.parameters()))


def test_ema_snapshot_is_the_shorter_runs_ema_and_survives_a_resume(tmp_path):
    """Autoguidance's guide: the EMA kept after step 8 of 20 is, bit for bit, the EMA a run of 8 steps ends
    with, and a run resumed from a state saved after that step ends with the same snapshot and weights."""
    from ldmpipe.training.resume import Checkpointing

    _, full, _ = fit(0, steps=20, snapshot=8)
    _, short, _ = fit(0, steps=8)
    assert full.snapshot.keys() == short.model.state_dict().keys()
    assert all(torch.equal(full.snapshot[k], v) for k, v in short.model.state_dict().items())
    assert not torch.equal(full.snapshot["0.weight"], full.model.state_dict()["0.weight"])
    assert fit(0, steps=20)[1].snapshot is None  # no snapshot unless asked for
    ckpt = Checkpointing(tmp_path / "state.pt", 10)
    fit(0, steps=12, snapshot=8, ckpt=ckpt)  # leaves its state at step 10, the snapshot in it
    _, resumed, _ = fit(0, steps=20, snapshot=8, ckpt=ckpt)  # resumes at 10: the snapshot comes from the file
    assert all(torch.equal(resumed.snapshot[k], v) for k, v in full.snapshot.items())
    assert all(torch.equal(resumed.model.state_dict()[k], v) for k, v in full.model.state_dict().items())
    with pytest.raises(ValueError, match="EMA snapshot"):
        fit(0, steps=20, snapshot=21)


def test_ema_is_the_warmed_up_average():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay_1 = min(0.5, 2/11) = 2/11
    assert ema.model.weight.item() == pytest.approx(1 - 2 / 11)
    ema.update(model)  # decay_2 = min(0.5, 3/12)
    assert ema.model.weight.item() == pytest.approx(1 - (2 / 11) * (3 / 12))


def test_batches_cover_each_epoch_once():
    gen = torch.Generator().manual_seed(0)
    it = batch_indices(10, 5, gen)
    first_epoch = torch.cat([next(it), next(it)])
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert len(next(batch_indices(3, 7, gen))) == 7  # batches larger than the data wrap epochs


def test_non_finite_loss_stops_with_the_step():
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf|-inf) at step \d+"):
        fit(0, steps=200, lr=1e12, ema=None)


def test_foreach_ema_equals_the_per_parameter_update():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.9)
    reference = [p.detach().clone() for p in ema.model.parameters()]
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        ema.update(model)
        d = min(0.9, (1 + ema.updates) / (10 + ema.updates))
        reference = [e.lerp(p.detach(), 1.0 - d) for e, p in zip(reference, model.parameters())]
    assert all(torch.equal(a, b) for a, b in zip(ema.model.parameters(), reference))
    assert torch.equal(ema.model[1].running_mean, model[1].running_mean)


def test_rng_restore_tolerates_other_gpu_counts(monkeypatch):
    from ldmpipe.training.resume import rng_state, set_rng_state

    state = rng_state()
    set_rng_state({**state, "cuda": torch.zeros(16, dtype=torch.uint8)})  # saved on a GPU machine, restored on CPU
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s: restored.append(s))
    one, other = torch.ones(4, dtype=torch.uint8), torch.zeros(4, dtype=torch.uint8)
    set_rng_state({**state, "cuda": one})  # this version: the current device's state
    set_rng_state({**state, "cuda": [one, other, other]})  # older states: one per visible GPU
    assert len(restored) == 2 and all(torch.equal(r, one) for r in restored)
