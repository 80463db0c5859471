"""AdaRound (Nagel et al. 2020): learn whether each weight rounds up or down on the layer output loss.

Each weight gets a continuous variable ``V``; the soft weight is
``s * (clamp(floor(w/s) + z + h(V), 0, qmax) - z)`` with the rectified sigmoid
``h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``. Adam minimises the
layer output error (relative to round-to-nearest's) plus ``lam * sum(1 - |2h - 1|^beta)``,
whose ``beta`` anneals from 20 to 2 after a warm-up so every ``h`` is pushed to 0
or 1; the final codes round with ``h >= 0.5``, except in an output channel whose error they leave above
round-to-nearest's, which keeps those codes. Scales and zero points are the
MSE-searched round-to-nearest ones. The output error is computed from ``X^T X``
over all calibration tokens: exactly (its Cholesky factor) when the layer has at
most ``max_rows`` inputs, otherwise from its top ``max_rows`` eigen-directions plus
the mean of the remaining eigenvalues times ``||W_soft - W||^2`` (cost per step
~ ``6 * max_rows * weights`` flops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from autoq.ptq.registry import register_method, require_stats
from autoq.ptq.rtn import rtn_mse
from autoq.quant import QuantizedTensor, QuantSpec
from autoq.quant.tensor import GroupView

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundConfig:
    """AdaRound's optimisation: Adam steps and rate, the rounding regulariser's weight and its beta annealed from
    ``beta_start`` to ``beta_end`` after ``warmup`` of the steps, and the rank of the output-error factor."""

    iters: int = 300
    lr: float = 0.1
    lam: float = 3.0
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0
    max_rows: int = 256

    def schedule(self, it: int) -> tuple[float, float]:
        """The regulariser's weight (before dividing by the variables' count) and its beta at step ``it``: none in the
        warm-up, then ``lam`` with beta falling linearly from ``beta_start`` (a soft push) to ``beta_end`` (a hard one)."""
        warm = int(self.warmup * self.iters)
        if it < warm:
            return 0.0, self.beta_start
        frac = (it - warm) / max(1, self.iters - warm)
        return self.lam, self.beta_end + (self.beta_start - self.beta_end) * (1 - frac)


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """``h(V)``: the sigmoid stretched to ``(GAMMA, ZETA)`` and clipped to [0, 1], so it reaches 0 and 1 exactly."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround(weight: torch.Tensor, spec: QuantSpec, stats: Any, config: AdaRoundConfig = AdaRoundConfig()) -> tuple[QuantizedTensor, torch.Tensor]:
    """The AdaRound codes and the final ``h(V)`` (for inspection), same grouped layout as the codes."""
    # |2h - 1|^beta underflows to denormals, which are ~10x slower on CPUs: flush them while optimising, then put the
    # process-wide setting back as it was (torch has no getter: a denormal times 1 reads 0 when flushing is on)
    was_on = float(torch.tensor([1e-40]) * torch.tensor([1.0])) == 0.0
    torch.set_flush_denormal(True)  # returns whether the CPU supports it
    try:
        return _adaround(weight, spec, stats, config)
    finally:
        torch.set_flush_denormal(was_on)


def _step(v, g_d, s_free, c0, m, m2, lam, beta, lr1, c2):
    """One Adam step on ``V`` from the output-error gradient ``g_d`` (grouped), then the new soft error ``D``.

    Hand-written gradients (no autograd) so that ``torch.compile`` fuses the ~25
    elementwise operations into one pass; this is the whole cost on wide layers.
    """
    sig = torch.sigmoid(v)
    raw = sig * (ZETA - GAMMA) + GAMMA
    h = raw.clamp(0.0, 1.0)
    x = 2 * h - 1
    g_h = g_d * s_free - (lam * beta * 2) * x.abs().clamp_min(1e-12).pow(beta - 1) * torch.sign(x)  # d/dh lam(1-|x|^beta)
    g = g_h * sig * (1 - sig) * (ZETA - GAMMA) * ((raw > 0) & (raw < 1))
    m.mul_(0.9).add_(g, alpha=0.1)
    m2.mul_(0.999).addcmul_(g, g, value=0.001)
    v.sub_(lr1 * m / ((m2 * c2).sqrt() + 1e-8))  # lr1 = lr / (1 - 0.9^t), c2 = 1 / (1 - 0.999^t)
    h_new = (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
    return c0 + s_free * h_new


def _compiled_step():
    try:
        return torch.compile(_step, dynamic=True)
    except Exception:  # torch.compile unavailable here: eager is exact, just slower
        return _step


COMPILE_ABOVE = 20_000_000  # weights x iterations above which compiling the step pays for its ~20 s


def _adaround(weight: torch.Tensor, spec: QuantSpec, stats: Any, config: AdaRoundConfig) -> tuple[QuantizedTensor, torch.Tensor]:
    stats = require_stats(stats, "adaround", weight, spec)
    w = weight.detach().float()
    base = rtn_mse(w, spec)
    view = GroupView(tuple(w.shape), spec)
    grouped = view.split(w)
    s, z = base.scale.float()[:, None], base.zero.float()[:, None]
    floor = torch.floor(grouped / s)
    rest = (grouped / s - floor).clamp(0.0, 1.0)
    # codes = clamp(floor + z + h): where floor + z is outside [0, qmax - 1] the code is fixed whatever h is
    fz = floor + z
    free = (fz >= spec.qmin) & (fz <= spec.qmax - 1)
    fixed_code = fz.clamp(spec.qmin, spec.qmax)
    s_free = (s * free).expand_as(grouped).contiguous()
    c0 = s * (fixed_code - z) - grouped  # soft error at h = 0 (for free entries), exact error for fixed ones
    p0 = ((rest - GAMMA) / (ZETA - GAMMA)).clamp(1e-4, 1 - 1e-4)
    v = torch.logit(p0)
    factor = stats.loss_factor(config.max_rows)
    with torch.no_grad():
        rounded = factor.row_errors(base.dequantize() - w)  # round-to-nearest's error by output channel, the bar at the end
        norm = max(float(rounded.sum()), 1e-20)
    n = grouped.numel()
    step = _compiled_step() if n * config.iters > COMPILE_ABOVE else _step
    m, m2 = torch.zeros_like(v), torch.zeros_like(v)
    d_grouped = c0 + s_free * rectified_sigmoid(v)
    with torch.no_grad():
        for it in range(config.iters):
            g_d = view.split(factor.half_grad(view.merge(d_grouped))) * (2.0 / norm)
            lam, beta = config.schedule(it)
            lam /= n
            t = it + 1  # scalars as tensors: a compiled step must not specialise (and recompile) on them
            scalars = torch.tensor([lam, beta, config.lr / (1 - 0.9**t), 1 / (1 - 0.999**t)], dtype=torch.float32)
            try:
                d_grouped = step(v, g_d, s_free, c0, m, m2, *scalars)
            except Exception:  # the compiler is missing or failed (it fails before running): eager is exact, just slower
                if step is _step:
                    raise
                step = _step
                d_grouped = step(v, g_d, s_free, c0, m, m2, *scalars)
        hv = rectified_sigmoid(v)
        codes = view.merge(torch.where(free, fz + (hv >= 0.5).float(), fixed_code)).to(torch.uint8)
        learnt = QuantizedTensor(spec, codes, base.scale, base.zero)
        # the hard rounding of h is not what Adam minimised (the soft weights were): where it leaves an output channel
        # worse than round-to-nearest (a rank-1 input, 2.2x), that channel keeps round-to-nearest's codes
        worse = factor.row_errors(learnt.dequantize() - w) > rounded
        codes = torch.where(worse[:, None], base.codes, codes)
    return QuantizedTensor(spec, codes, base.scale, base.zero), hv


@register_method("adaround", needs_stats=True)
def adaround_method(weight: torch.Tensor, spec: QuantSpec, stats: Any = None) -> QuantizedTensor:
    """The ``adaround`` method: AdaRound's learnt codes on the MSE-searched round-to-nearest grid."""
    return adaround(weight, spec, stats)[0]
