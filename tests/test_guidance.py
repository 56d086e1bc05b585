"""Classifier-free guidance and autoguidance: the formulas for every prediction type, the doubled batch, the
network passes, label dropout, classes."""

from __future__ import annotations

import math

import pytest
import torch

from ldmpipe.diffusion import PREDICTIONS, NoiseSchedule, predict_eps, predict_x0, sample_generators, training_target
from ldmpipe.diffusion.ddim import DDIMSampler
from ldmpipe.diffusion.guidance import AutoGuidedModel, GuidedModel, drop_labels, guide, model_passes, passes, sample_classes
from ldmpipe.diffusion.sampling import sample_loop
from ldmpipe.models.unet import UNet

SCHEDULE = NoiseSchedule.from_config("linear", 50, 1e-4, 2e-2)
NULL = 3  # three classes 0..2, null class 3


def eps_net(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A made-up class-conditional noise predictor (B, C, H, W): its own value for every class and the null class."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    return 0.4 * x + (0.3 * (y.to(x.dtype) - 1.5) + 0.01 * t.to(x.dtype)).reshape(shape) * torch.cos(x)


def net_predicting(prediction: str):
    """`eps_net` re-expressed as a network that predicts eps, x0 or v (exact conversions, Salimans & Ho 2022)."""

    def net(x, t, y):
        eps = eps_net(x, t, y)
        abar = SCHEDULE.alphas_cumprod[t].to(x.dtype)  # (B,)
        a = abar.sqrt().reshape(-1, 1, 1, 1)
        x0 = (x - (1 - abar).sqrt().reshape(-1, 1, 1, 1) * eps) / a
        return training_target(prediction, x0, eps, abar)

    return net


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("w", [0.0, 1.0, 1.5, 4.0])
def test_guiding_the_output_is_guiding_eps_for_every_prediction_type(prediction, w):
    """Guiding eps, x0 or v gives the eps and x0 of the paper's eps-guidance (Ho & Salimans 2022, eq. 6)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    out_c, out_u = torch.randn(2, 4, 2, 3, 3, generator=g, dtype=torch.float64)
    for abar in (0.02, 0.5, 0.98):
        guided = guide(out_c, out_u, w)
        eps_c, eps_u = predict_eps(prediction, out_c, x, abar), predict_eps(prediction, out_u, x, abar)
        direct = eps_u + w * (eps_c - eps_u)
        torch.testing.assert_close(predict_eps(prediction, guided, x, abar), direct, rtol=0, atol=1e-12)
        x0_direct = (x - math.sqrt(1 - abar) * direct) / math.sqrt(abar)
        torch.testing.assert_close(predict_x0(prediction, guided, x, abar), x0_direct, rtol=0, atol=1e-11)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_guided_sampling_equals_an_eps_model_guided_directly(prediction):
    """A whole DDIM run on the guided eps/x0/v network equals one on the directly guided eps."""
    labels, w = torch.tensor([0, 2, 1, 0]), 2.5
    gens = lambda: sample_generators(range(4))  # noqa: E731
    sampler = DDIMSampler(SCHEDULE, prediction=prediction, spacing="trailing")
    sampler.set_timesteps(10)
    guided = sample_loop(GuidedModel(net_predicting(prediction), labels, NULL, w), sampler, (4, 2, 3, 3), gens(), "cpu", False)

    def direct(x, t):
        return guide(eps_net(x, t, labels), eps_net(x, t, torch.full_like(labels, NULL)), w)

    reference = DDIMSampler(SCHEDULE, prediction="epsilon", spacing="trailing")
    reference.set_timesteps(10)
    expected = sample_loop(direct, reference, (4, 2, 3, 3), gens(), "cpu", False)
    torch.testing.assert_close(guided, expected, rtol=0, atol=2e-5)


class Spy:
    """Records the batch size and labels of every network call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((len(x), y.tolist()))
        return eps_net(x, t, y)


def test_one_forward_over_a_doubled_batch():
    spy, labels = Spy(), torch.tensor([2, 0, 1])
    x, t = torch.randn(3, 2, 4, 4), torch.tensor([7, 7, 7])
    out = GuidedModel(spy, labels, NULL, 3.0)(x, t)
    assert spy.calls == [(6, [2, 0, 1, NULL, NULL, NULL])]
    direct = eps_net(x, t, torch.full_like(labels, NULL)) + 3.0 * (eps_net(x, t, labels) - eps_net(x, t, torch.full_like(labels, NULL)))
    torch.testing.assert_close(out, direct, rtol=0, atol=1e-6)


def test_w_1_never_runs_the_null_class_and_w_0_only_it():
    x, t, labels = torch.randn(3, 2, 4, 4), torch.tensor([5, 5, 5]), torch.tensor([2, 0, 1])
    spy = Spy()
    assert torch.equal(GuidedModel(spy, labels, NULL, 1.0)(x, t), eps_net(x, t, labels))
    assert spy.calls == [(3, [2, 0, 1])]
    spy = Spy()
    GuidedModel(spy, labels, NULL, 0.0)(x, t)
    assert spy.calls == [(3, [NULL] * 3)]
    assert [passes(w) for w in (0.0, 1.0, 0.5, 1.5, 7.0)] == [1, 1, 2, 2, 2]


def guide_net(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """A made-up weaker network (the guide): another function of the same inputs."""
    cls = 0.0 if y is None else 0.2 * y.to(x.dtype).reshape(-1, 1, 1, 1)
    return 0.3 * x + cls + 0.02 * torch.sin(x)


class GuideSpy(Spy):
    def __call__(self, x, t, y=None):
        self.calls.append((len(x), None if y is None else y.tolist()))
        return guide_net(x, t, y)


def test_autoguidance_of_an_unconditional_model():
    """out = out_guide + w_g (out - out_guide) (Karras et al. 2024, eq. 1); at w_g = 1 the guide never runs."""
    x, t = torch.randn(3, 2, 4, 4), torch.tensor([9, 9, 9])
    net = lambda x, t: eps_net(x, t, torch.zeros(len(x), dtype=torch.long))  # noqa: E731
    spy = GuideSpy()
    out = AutoGuidedModel(net, spy, 1.7)(x, t)
    torch.testing.assert_close(out, guide_net(x, t) + 1.7 * (net(x, t) - guide_net(x, t)), rtol=0, atol=1e-6)
    assert spy.calls == [(3, None)] and AutoGuidedModel(net, spy, 1.7).passes == 2
    spy = GuideSpy()
    assert torch.equal(AutoGuidedModel(net, spy, 1.0)(x, t), net(x, t)) and spy.calls == []


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_autoguidance_with_classifier_free_guidance(w):
    """Both guidances: out_guide + w_g (out_class - out_guide) + (w - 1)(out_class - out_null), the guide given
    the model's class (the null class at w = 0); the model's passes stay one doubled forward."""
    x, t, labels, w_g = torch.randn(3, 2, 4, 4), torch.tensor([4, 4, 4]), torch.tensor([2, 0, 1]), 1.6
    spy, guide_spy = Spy(), GuideSpy()
    model = AutoGuidedModel(spy, guide_spy, w_g, labels, NULL, w)
    out = model(x, t)
    y = torch.full_like(labels, NULL) if w == 0.0 else labels
    c, u, g = eps_net(x, t, y), eps_net(x, t, torch.full_like(labels, NULL)), guide_net(x, t, y)
    torch.testing.assert_close(out, g + w_g * (c - g) + (w - 1.0) * (c - u), rtol=0, atol=1e-5)
    assert guide_spy.calls == [(3, y.tolist())]
    assert spy.calls == ([(6, [2, 0, 1] + [NULL] * 3)] if w == 2.5 else [(3, y.tolist())])
    assert model.passes == len(spy.calls) + (spy.calls[0][0] == 6) + 1
    spy = Spy()  # w_g = 1: classifier-free guidance alone, bit for bit
    assert torch.equal(AutoGuidedModel(spy, guide_spy, 1.0, labels, NULL, w)(x, t), GuidedModel(eps_net, labels, NULL, w)(x, t))


def test_network_passes_per_step():
    assert [model_passes(False, 1.0, g) for g in (1.0, 0.0, 2.0)] == [1, 2, 2]
    assert [model_passes(True, w, 1.0) for w in (0.0, 1.0, 1.5)] == [1, 1, 2]
    assert [model_passes(True, w, 1.5) for w in (0.0, 1.0, 1.5)] == [2, 2, 3]


def test_label_dropout_rate():
    """Each label goes to the null class with probability p: the count is Binomial(n, p)."""
    n, p = 200_000, 0.1
    labels = torch.arange(n) % 5
    dropped = drop_labels(labels, p, 5, torch.Generator().manual_seed(0))
    is_null = dropped == 5
    assert abs(is_null.float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma: 0.0034
    assert torch.equal(dropped[~is_null], labels[~is_null])  # the others keep their label
    for k in range(5):  # no class is dropped more than another (each ~ 40 000 rows, 5 sigma = 0.0075)
        assert abs(is_null[labels == k].float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / (n / 5))
    again = drop_labels(labels, p, 5, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)
    assert torch.equal(drop_labels(labels, 0.0, 5, torch.Generator().manual_seed(0)), labels)


def test_class_of_sample_i_does_not_depend_on_the_batch_size():
    whole = sample_classes(range(23), [0, 1, 2, 3, 4])
    for batch in (1, 4, 7, 23):
        chunks = [sample_classes(range(s, min(s + batch, 23)), [0, 1, 2, 3, 4]) for s in range(0, 23, batch)]
        assert torch.equal(torch.cat(chunks), whole)
    assert torch.bincount(whole).tolist() == [5, 5, 5, 4, 4]  # balanced to within one
    assert sample_classes(range(4), [3, 1]).tolist() == [3, 1, 3, 1]
    with pytest.raises(ValueError, match="at least one class"):
        sample_classes(range(3), [])


def test_unconditional_unet_is_unchanged_and_conditional_adds_only_the_embedding():
    """num_classes = 0 builds the network of before: same config keys, state-dict keys and initial weights."""
    torch.manual_seed(0)
    plain = UNet(4, 8, 16, (1, 2), 1, (4,))
    torch.manual_seed(0)
    cond = UNet(4, 8, 16, (1, 2), 1, (4,), num_classes=5)
    assert list(plain.config) == ["in_channels", "sample_size", "channels", "channel_mult", "num_res_blocks",
                                  "attention_resolutions", "dropout"]  # fmt: skip
    assert cond.config == {**plain.config, "num_classes": 5}
    p, c = plain.state_dict(), cond.state_dict()
    assert set(c) - set(p) == {"class_embed.weight"} and set(p) <= set(c)
    assert c["class_embed.weight"].shape == (6, 64)  # 5 classes + the null class, time-embedding width 4C
    assert all(torch.equal(p[k], c[k]) for k in p)  # created last: the other weights are initialised alike
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 9])
    torch.nn.init.normal_(cond.out[-1].weight)
    assert not torch.allclose(cond(x, t, torch.tensor([0, 0])), cond(x, t, torch.tensor([1, 1])))
    with pytest.raises(ValueError, match="needs labels"):
        cond(x, t)
    with pytest.raises(ValueError, match="needs labels"):
        plain(x, t, torch.tensor([0, 1]))
