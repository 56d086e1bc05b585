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

Autoguidance (Karras et al. 2024, eq. 1 with D_1 an earlier snapshot of the same training run) guides the
model away from a weaker version of itself instead of from its unconditional self, and works on
unconditional models too:

    out = out_guide + w_g (out_model - out_guide)

both given the same class (or none). With classifier-free guidance as well, the two differences are
added: out = out_guide + w_g (out_class - out_guide) + (w - 1)(out_class - out_null). `AutoGuidedModel`
runs the guide network once more per step (its own forward: it is another network).
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


def model_passes(conditional: bool, w: float, w_guide: float) -> int:
    """Network evaluations per sampler step: the model's (`passes` for a class model, else 1) plus one of
    the guide's when autoguidance is on (w_guide != 1)."""
    return (passes(w) if conditional else 1) + (w_guide != 1.0)


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


class AutoGuidedModel:
    """``model(x, t)`` for the sampling loop: autoguidance by ``guide_net`` at ``w_guide`` (Karras et al.
    2024), on an unconditional ``net(x, t)`` or, with ``labels`` (B,), a class model ``net(x, t, y)`` that is
    also guided by classifier-free guidance at ``w`` (see the module's docstring).

    The guide sees the class the model sees: the label, or the null class at w = 0. At w_guide = 1 the
    guide is never run and the output is the plain model's (or `GuidedModel`'s), bit for bit.
    """

    def __init__(self, net, guide_net, w_guide: float, labels: torch.Tensor | None = None, null: int = 0,
                 w: float = 1.0) -> None:  # fmt: skip
        self.net, self.guide_net, self.w_guide = net, guide_net, float(w_guide)
        self.cfg = None if labels is None else GuidedModel(net, labels, null, w)

    @property
    def passes(self) -> int:
        return model_passes(self.cfg is not None, 1.0 if self.cfg is None else self.cfg.w, self.w_guide)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W), t: (B,)
        if self.cfg is None:  # unconditional
            out = self.net(x, t)
            return out if self.w_guide == 1.0 else guide(out, self.guide_net(x, t), self.w_guide)
        cfg = self.cfg
        if self.w_guide == 1.0:
            return cfg(x, t)
        y = (cfg.null if cfg.w == 0.0 else cfg.labels).to(x.device)  # the class both networks see (B,)
        if cfg.w in (0.0, 1.0):  # one pass of the model: its output is the class (or null) output itself
            out = self.net(x, t, y)
            return guide(out, self.guide_net(x, t, y), self.w_guide)
        # both guidances: the model's two passes as one forward over the doubled batch, then the guide's
        out_class, out_null = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, cfg.null.to(x.device)])).chunk(2)
        return guide(out_class, self.guide_net(x, t, y), self.w_guide) + (cfg.w - 1.0) * (out_class - out_null)


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
