"""The measurement helpers of benchmark scripts whose figures the README quotes: the DDPM loop of
`benchmarks/diagnose_reverse.py`, the partial DDIM of `benchmarks/diagnose_steps.py`, the loss weights
of `benchmarks/truncated_snr.py`, the learning-rate decay of `benchmarks/lr_decay.py`, the input
perturbation of `benchmarks/input_perturbation.py` and the self-conditioned UNet of
`benchmarks/self_conditioning.py`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ldmpipe.diffusion import NoiseSchedule, min_snr_weights, predict_eps, predict_x0
from ldmpipe.diffusion.noise import randn_per_sample, sample_generators
from ldmpipe.generate import make_sampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from diagnose_reverse import SNoiseDDPM, ddpm_from  # noqa: E402
from truncated_snr import truncated_min_snr_weights  # noqa: E402
import diagnose_steps  # noqa: E402
import input_perturbation  # noqa: E402
import lr_decay  # noqa: E402
import self_conditioning  # noqa: E402
from conftest import ENV  # noqa: E402


def _ddpm(T: int = 20, s_noise: float = 1.0):
    schedule = NoiseSchedule.from_config("cosine", T, 1e-4, 2e-2)
    sampler = SNoiseDDPM(schedule, prediction="v_prediction", s_noise=s_noise)
    sampler.set_timesteps(T)
    return sampler


def unet(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # a stand-in network: (B, C, H, W) -> same
    return 0.3 * x + 0.01 * t.float().view(-1, 1, 1, 1)


def test_ddpm_from_is_the_samplers_own_loop_and_s_noise_only_scales_the_fresh_noise():
    sampler, x, seeds = _ddpm(), torch.randn(4, 2, 3, 3), [5, 6, 7, 8]
    plain = make_sampler("ddpm", sampler.schedule, prediction="v_prediction", spacing="trailing")
    plain.set_timesteps(20)
    expected, gens = x.clone(), sample_generators(seeds)
    for t in [t for t in plain.timesteps.tolist() if t <= 12]:
        expected = plain.step(unet(expected, torch.full((4,), t)), t, expected, generator=gens)
    assert torch.equal(ddpm_from(unet, sampler, x, 12, seeds), expected)
    one_step = [ddpm_from(unet, _ddpm(s_noise=s), x, 1, seeds) for s in (1.0, 2.0, 3.0)]  # t = 1 then t = 0
    assert (one_step[1] - one_step[0]).abs().max() > 1e-3
    torch.testing.assert_close(one_step[2] - one_step[1], one_step[1] - one_step[0], atol=1e-6, rtol=0)
    assert torch.equal(ddpm_from(unet, _ddpm(s_noise=2.0), x, 0, seeds), ddpm_from(unet, sampler, x, 0, seeds))  # no noise at t = 0
    # S_noise = 2 at t = 1: the step's own fresh noise sigma_1 z once more, sigma_1^2 = beta-tilde_1 (eq. 7)
    abar = sampler.schedule.alphas_cumprod
    sigma = ((1 - abar[0]) / (1 - abar[1]) * (1 - abar[1] / abar[0])).sqrt().item()
    y = plain.step(unet(x, torch.full((4,), 1)), 1, x, generator=sample_generators(seeds))
    y = y + sigma * randn_per_sample(x.shape, sample_generators(seeds))
    torch.testing.assert_close(one_step[1], plain.step(unet(y, torch.full((4,), 0)), 0, y), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="t_s = 25 is not one of the sampler's timesteps"):
        ddpm_from(unet, sampler, x, 25, seeds)


def test_ddpm_from_gives_sample_i_the_same_result_at_any_n_and_batch():
    """The README's grid comes from a 16-sample run and stands for the first 8 of the 500-sample rows."""
    sampler, x = _ddpm(), torch.randn(6, 2, 3, 3)
    full = ddpm_from(unet, sampler, x, 15, list(range(6)), batch=4)
    torch.testing.assert_close(ddpm_from(unet, sampler, x[:3], 15, list(range(3)), batch=2), full[:3], atol=1e-6, rtol=0)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_truncated_weights_are_min_snr_above_snr_1_and_the_x0_error_below(prediction):
    snr = torch.tensor([0.0, 1e-6, 0.05, 0.5, 1.0, 2.0, 5.0, 50.0], dtype=torch.float64)
    w = truncated_min_snr_weights(snr, 5.0, prediction)
    to_x0 = {"epsilon": snr, "sample": torch.ones_like(snr), "v_prediction": snr + 1}[prediction]  # error ratio
    x0_weight = (w * to_x0)[1:]  # the weight on the x0 error; SNR = 0 is the guard (weight 1)
    torch.testing.assert_close(x0_weight, torch.tensor([1, 1, 1, 1, 2, 5, 5], dtype=torch.float64))
    assert w[0] == 1.0
    at_least_1 = snr >= 1
    torch.testing.assert_close(w[at_least_1], min_snr_weights(snr, 5.0, prediction)[at_least_1])


def test_partial_reverse_is_k_ddim_steps_from_t_s_on_its_even_grid(monkeypatch):
    """x_{t_s} = sqrt(abar) x0 + sqrt(1 - abar) eps, then DDIM (eta = 0) at t_s, t_s (k-1)/k, ..., t_s / k (rounded)."""
    monkeypatch.setattr(diagnose_steps, "decode_samples", lambda vae, x, scale: x)
    schedule = NoiseSchedule.from_config("cosine", 100, 1e-4, 2e-2)
    abar = schedule.alphas_cumprod
    x0, eps = torch.randn(3, 2, 3, 3), torch.randn(3, 2, 3, 3)
    t_s, k = 70, 3
    out = diagnose_steps.partial_reverse(unet, None, schedule, "v_prediction", x0, eps, t_s, k, 1.0)
    x = abar[t_s].sqrt().item() * x0 + (1 - abar[t_s]).sqrt().item() * eps
    for t, prev in [(70, 47), (47, 23), (23, -1)]:
        a, a_prev = abar[t].item(), (abar[prev].item() if prev >= 0 else 1.0)
        out_t = unet(x, torch.full((3,), t))
        x = a_prev**0.5 * predict_x0("v_prediction", out_t, x, a) + (1 - a_prev) ** 0.5 * predict_eps("v_prediction", out_t, x, a)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_lr_decay_keeps_the_warm_up_then_anneals_to_zero(monkeypatch, kind):
    """The loop's warm-up factor min(1, (i + 1) / 10), times 1 until step 10, then down to 0 at step 50."""
    monkeypatch.setattr(torch.optim.lr_scheduler, "LambdaLR", torch.optim.lr_scheduler.LambdaLR)  # undone after
    lr_decay.patch(kind, 50, 10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 10))
    lrs = []
    for _ in range(51):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([0.2 * (i + 1) for i in range(10)])  # warm-up untouched
    assert lrs[30] == pytest.approx(1.0)  # half way through the decay, both kinds
    assert lrs[40] == pytest.approx(0.5 if kind == "linear" else 1.0 - 2**-0.5)
    assert lrs[50] == pytest.approx(0.0, abs=1e-12) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_input_perturbation_perturbs_the_input_and_keeps_the_loss_draws_and_target(monkeypatch):
    """The wrapped loss sees x_t = a x0 + s (eps + gamma xi) with the unwrapped loss's t and eps (same
    generator state), and regresses the unperturbed target: a network returning that target scores 0."""
    from ldmpipe.diffusion import training_target
    from ldmpipe.stages import train_diffusion

    monkeypatch.setattr(train_diffusion, "diffusion_loss", train_diffusion.diffusion_loss)  # undone after
    schedule, x0, gamma = NoiseSchedule.from_config("cosine", 50, 1e-4, 2e-2), torch.randn(6, 2, 4, 4), 0.1
    seen = {}

    def record(key):
        def model(x_t, t):
            seen[key] = (x_t, t)
            return torch.zeros_like(x_t)
        return model

    train_diffusion.diffusion_loss(record("plain"), schedule, x0, torch.Generator().manual_seed(3), prediction="v_prediction")
    input_perturbation.patch(gamma, seed=7)
    train_diffusion.diffusion_loss(record("ip"), schedule, x0, torch.Generator().manual_seed(3), prediction="v_prediction")
    (x_plain, t), (x_ip, t_ip) = seen["plain"], seen["ip"]
    assert torch.equal(t, t_ip)
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(t, torch.randint(0, 50, (6,), generator=gen))  # the loss's draws: t, then eps
    eps = torch.randn(x0.shape, generator=gen)
    xi = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(x_plain, schedule.add_noise(x0, eps, t), atol=1e-6)
    assert torch.allclose(x_ip, schedule.add_noise(x0, eps + gamma * xi, t), atol=1e-6)
    target = training_target("v_prediction", x0, eps, schedule.alphas_cumprod[t])
    exact = train_diffusion.diffusion_loss(lambda x, tt: target, schedule, x0, torch.Generator().manual_seed(3),
                                           prediction="v_prediction")  # fmt: skip
    assert float(exact) == 0.0


def test_self_conditioning_feeds_the_previous_x0_within_a_chain_and_zeros_at_its_start():
    """Sampling (eval mode): the first call of a chain sees x0_prev = 0, the next (lower t) the x0 implied by
    the previous output, and a call at a t not below the last starts a new chain. Training: each call trains
    on x0_prev = 0 or on the network's own no-grad estimate. The config is the plain UNet's, the class name too."""
    from ldmpipe.models.unet import UNet

    schedule = NoiseSchedule.from_config("cosine", 20, 1e-4, 2e-2)
    cls = self_conditioning.make_class(UNet, schedule, "v_prediction")
    torch.manual_seed(0)
    net = cls(2, 8, 8, [1, 2], 1, [4])
    for p in net.parameters():  # the zero-initialised output layer would make every x0 estimate the same
        torch.nn.init.normal_(p, std=0.1)
    assert cls.__name__ == "UNet" and net.config == UNet(2, 8, 8, [1, 2], 1, [4]).config
    seen = []
    net.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    net.eval()
    with torch.no_grad():
        out = net(x, torch.full((3,), 9))
        net(x, torch.full((3,), 5))
        net(x, torch.full((3,), 9))
    assert torch.equal(seen[0][:, 2:], torch.zeros_like(x)) and torch.equal(seen[0][:, :2], x)
    assert torch.allclose(seen[1][:, 2:], predict_x0("v_prediction", out, x, float(schedule.alphas_cumprod[9])))
    assert torch.equal(seen[2][:, 2:], torch.zeros_like(x))
    net.train()
    seen.clear()
    t = torch.tensor([3, 7, 11])
    for _ in range(12):
        net(x, t).sum().backward()
    assert 12 < len(seen) < 24  # per call: [the no-grad pass, if any,] then the trained pass
    conds = [c[:, 2:] for c in seen]
    assert any(torch.equal(c, torch.zeros_like(x)) for c in conds) and any(c.abs().sum() > 0 for c in conds)


@pytest.mark.e2e
def test_diagnose_reverse_runs_on_a_finished_run(tiny_run, tmp_path):
    """The script end to end on the tiny run's outputs (4 latents from t_s = 30 of T = 100, both processes),
    so a change of the library calls it makes (or of `partial_reverse`) cannot break it unnoticed."""
    run, _ = tiny_run
    out = tmp_path / "diagnose_reverse.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "diagnose_reverse.py"
    done = subprocess.run([sys.executable, str(script), "--root", str(run), "--n", "4", "--starts", "30", "--out", str(out)],
                          capture_output=True, text=True, env=ENV)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {(r["process"], r["t_s"]) for r in result["rows"]}
    assert rows == {("real latents, decoded", 0), ("DDPM, every step", 30), ("DDIM eta=0, 25 steps", 30)}
    assert all(r["fid"] >= 0 and 0 <= r["kept"] <= 1 and sum(r["called"].values()) == pytest.approx(1) for r in result["rows"])
