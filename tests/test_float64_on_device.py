"""Nothing of a training step computes in float64 on the training device: MPS has no float64 and raises
"Cannot convert a MPS Tensor to float64" (pytorch/pytorch#122602), so the schedule's float64 tables are
cast on the CPU before they are copied to the device. The meta device stands in for MPS here (no
machine of our CI has one): every op of the step runs on it, and any float64 tensor there fails."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ldmpipe.diffusion.loss import diffusion_loss
from ldmpipe.diffusion.schedule import NoiseSchedule
from ldmpipe.models.unet import UNet


class NoFloat64OffCPU(TorchDispatchMode):
    """Raises on any op that takes or returns a float64 tensor outside the CPU, as MPS does."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in tree_flatten((args, kwargs, out))[0]:
            if isinstance(x, torch.Tensor) and x.dtype == torch.float64 and x.device.type != "cpu":
                raise TypeError(f"{func}: a float64 tensor on {x.device}")
        return out


def test_the_guard_catches_the_old_order():
    """The guard is not vacuous: widening on the device, as the stages did before, is refused."""
    with NoFloat64OffCPU(), pytest.raises(TypeError, match="float64 tensor on meta"):
        torch.ones(3, device="meta").double()


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("timestep_sampling", ["uniform", "importance"])
def test_a_training_step_keeps_float64_on_the_cpu(prediction, timestep_sampling):
    schedule = NoiseSchedule.from_config("cosine", 50)
    unet = UNet(4, 8, 8, [1, 2], 1, [4], scale_shift=True).to("meta")
    x0 = torch.zeros(3, 4, 8, 8, device="meta")
    with NoFloat64OffCPU():
        loss = diffusion_loss(unet, schedule, x0, torch.Generator().manual_seed(0), prediction, 5.0,
                              timestep_sampling=timestep_sampling)  # fmt: skip
        loss.backward()
    assert loss.device.type == "meta" and loss.dtype == torch.float32
