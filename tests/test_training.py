"""The generic training loop: determinism, EMA, batches, and the non-finite guard."""

from __future__ import annotations

import pytest
import torch

from ldmpipe.training import EMA, NonFiniteLossError, TrainSettings, batch_indices, train_loop


def fit(seed: int, steps: int = 20, lr: float = 1e-2, ema: float | None = 0.9):
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
    out = train_loop(model, loss_fn, TrainSettings(steps=steps, lr=lr, warmup_steps=5, grad_clip=1.0, ema_decay=ema,
                                                   log_every=5), log=lambda s, m: logs.append((s, m)))  # fmt: skip
    return model, out, logs


def test_same_seed_same_weights():
    (a, ea, la), (b, eb, lb) = fit(0), fit(0)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(ea.model.parameters(), eb.model.parameters()):
        assert torch.equal(p, q)
    assert la == lb and [s for s, _ in la] == [5, 10, 15, 20]
    assert not torch.equal(next(fit(1)[0].parameters()), next(a.parameters()))


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
