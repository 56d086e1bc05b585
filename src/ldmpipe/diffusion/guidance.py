"""Classifier-free guidance (Ho & Salimans 2022): label dropout in training, guided outputs in sampling.

One network learns both p(x | c) and p(x): during training each label is replaced by the null class
with probability ``cond_drop`` (`drop_labels`).  At sampling time the conditional and the null output
are combined (their eq. 6, written with w = their 1 + w):

    out = out_null + w (out_class - out_null)

so w = 1 is the plain conditional model and w = 0 the unconditional one. The formula is applied to the
raw network output, whatever it predicts: eps, x0 and v are each affine in the output with the same
coefficients for both passes (see `parameterization`), so guiding v or x0 gives exactly the eps-guided
sample of the paper. `GuidedModel` runs both passes as one forward call over a doubled batch (2B, ...);
at w = 1 it runs the conditional pass only, at w = 0 the null pass only: `passes` counts the network
evaluations per sampler step, for honest NFE.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

LabelledModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guide(out_class: torch.Tensor, out_null: torch.Tensor, w: float) -> torch.Tensor:
    """out_null + w (out_class - out_null), both (B, C, H, W) (Ho & Salimans 2022, eq. 6)."""
    return out_null + w * (out_class - out_null)


def passes(w: float) -> int:
    """Network evaluations per step at guidance scale w: 1 at w = 1 (class only) and w = 0 (null only), else 2."""
    return 1 if w in (0.0, 1.0) else 2


class GuidedModel:
    """``model(x, t)`` for the sampling loop, from a labelled ``net(x, t, y)`` and one label per row.

    labels: (B,) int64 in {0..K-1}; null: the null class K; w: the guidance scale.
    """

    def __init__(self, net: LabelledModel, labels: torch.Tensor, null: int, w: float) -> None:
        self.net, self.labels, self.w = net, labels, float(w)
        self.null = torch.full_like(labels, null)

    @property
    def passes(self) -> int:
        return passes(self.w)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.w == 1.0:  # plainly conditional: the null pass would be multiplied by 0
            return self.net(x, t, self.labels.to(x.device))
        if self.w == 0.0:  # plainly unconditional
            return self.net(x, t, self.null.to(x.device))
        # 1. one forward over the doubled batch: rows 0..B-1 with their class, B..2B-1 with the null class
        y = torch.cat([self.labels, self.null]).to(x.device)  # (2B,)
        out = self.net(torch.cat([x, x]), torch.cat([t, t]), y)  # (2B, C, H, W)
        # 2. combine the two halves (eq. 6)
        out_class, out_null = out.chunk(2)
        return guide(out_class, out_null, self.w)


def drop_labels(labels: torch.Tensor, p: float, null: int, generator: torch.Generator | None) -> torch.Tensor:
    """Labels (B,) with each replaced by ``null`` with probability p (one uniform per row from the CPU
    ``generator``, drawn even at p = 0 so the random stream does not depend on p)."""
    u = torch.rand(labels.shape, generator=generator)  # (B,) on the CPU
    return torch.where(u.to(labels.device) < p, torch.full_like(labels, null), labels)


def sample_classes(indices: Sequence[int] | range, classes: Sequence[int]) -> torch.Tensor:
    """The class of each sample index i: classes[i mod len(classes)], (N,) int64.

    A function of i alone, so sample i has the same class whatever the batch size or the number drawn;
    any n samples in a row of indices are balanced across ``classes`` to within one."""
    if not classes:
        raise ValueError("need at least one class to draw")
    table = torch.as_tensor(list(classes), dtype=torch.int64)
    return table[torch.as_tensor(list(indices), dtype=torch.int64) % len(table)]
