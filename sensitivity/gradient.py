"""Gradient-based metrics: Hessian trace per layer (Hutchinson, HAWQ-V2) and the diagonal Fisher.

The Hessian works on a loss: the user's task loss when ``Inputs.loss`` is given, else the
divergence from the full-precision output (see `autoq.sensitivity.inputs.divergence`),
averaged over output positions. At the full-precision point that divergence has
zero gradient, and its Hessian is the Gauss-Newton / Fisher matrix. The Fisher needs no
loss, nor labels (below): a task loss given leaves it as it is.

* ``hessian``: ``tr(H_l) ~ mean over Rademacher v of v_l . (H v)_l``. One
  Hessian-vector product (autograd twice) per iteration serves every layer. It
  stops when every layer's standard error is below ``tol`` times its trace, or
  after ``max_iter`` iterations. Score at an option: ``tr(H_l) / n_l * ||Q(W) - W||^2``,
  with the standard error scaled the same way; a negative trace estimate (noise, or negative
  curvature of a user's loss) scores 0.
* ``fisher``: ``F = E[g^2]`` with ``g = J^T r`` for residuals ``r`` drawn with the
  covariance of the model's own output distribution, so no labels are needed: a unit
  Gaussian around real outputs; for logits the softmax's ``diag(p) - p p^T``, drawn as
  ``sqrt(p) * z - p * (sqrt(p) . z)`` with Rademacher ``z``. That has the expectation of
  the usual sampled-label Fisher without its heavy tail: on a classifier 99.9% sure of
  its answers, a sampled label is almost always that answer (a tiny gradient), and the
  rare other draws carry the whole estimate (4 draws ranged 0.02-5x the exact Fisher per
  layer on digits-cnn; these 0.7-1.1x). The residuals are independent across positions,
  so one backward pass of the summed loss per batch gives an unbiased diagonal. Score:
  ``sum F * (Q(W) - W)^2``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autoq.errors import AutoqError
from autoq.evaluate import call_model
from autoq.model import layout_2d
from autoq.model.signature import mask_position
from autoq.sensitivity.inputs import (
    OUTPUT_KINDS,
    Inputs,
    batch_rows,
    divergence,
    finite,
    padded_nan_cause,
    position_weights,
    readout,
    resolve_output_kind,
    subsample,
)
from autoq.sensitivity.registry import MetricOutput, register_metric
from autoq.sensitivity.table import Entry

BatchLoss = Callable[[nn.Module, Any, int], torch.Tensor]  # (model, batch, batch index) -> scalar, summing to the full loss


def _differentiable(loss: torch.Tensor, metric: str) -> torch.Tensor:
    """``loss``, or a clear error when the model's output carries no gradient (a forward under ``no_grad``)."""
    if not loss.requires_grad:
        raise AutoqError(f"the {metric} metric needs gradients, but the model's output does not require grad (does its forward "
                         "run under torch.no_grad or inference_mode?); use a forward metric instead: kl, sqnr or mse")
    return loss


@contextlib.contextmanager
def only_grads_for(model: nn.Module, params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Gradients flow to ``params`` only, and attention uses the twice-differentiable math kernel."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    wanted = {id(p) for p in params}
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in wanted)
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            kernel = sdpa_kernel(SDPBackend.MATH)
        except ImportError:  # older torch: the default kernels
            kernel = contextlib.nullcontext()
        with torch.enable_grad(), kernel:
            yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _non_finite(metric: str, what: str, model: nn.Module, batches: Sequence[Any], i: int, dtype: torch.dtype,
                feed: Callable[[Any], Any]) -> AutoqError:
    """The error for a NaN or Inf gradient on batch ``i``: NaN at padded positions where the output shows it
    (`padded_nan_cause`; it read 'overflow', or a score 'is nan'), else an overflow."""
    cause = padded_nan_cause(model, batches, feed)
    if cause is not None:
        return AutoqError(f"{metric}: {what} is NaN: {cause}")
    half = "; score a float16 or bfloat16 model in float32" if dtype in (torch.float16, torch.bfloat16) else ""
    # (i counts the batches of rows it probes, which rows_per_batch cuts from the calibration batches)
    return AutoqError(f"{metric}: {what} is NaN or Inf on batch {i} of the {len(batches)} batches of calibration rows it "
                      f"probes: the model's loss or its gradients overflow there{half}")


def divergence_loss(inputs: Inputs, batches: Sequence[Any], output_kind: str) -> BatchLoss:
    """Mean divergence from the full-precision output over all (unmasked) positions of ``batches``."""
    with torch.no_grad():
        raw = [call_model(inputs.model, b) for b in batches]
    kind = resolve_output_kind(output_kind, raw[0])
    refs = [readout(r).detach().clone() for r in raw]
    mask_at = mask_position(inputs.model)
    weights = [position_weights(b, ref, mask_at) for b, ref in zip(batches, refs)]
    total = float(sum(w.sum() for w in weights))

    def loss(model: nn.Module, batch: Any, i: int) -> torch.Tensor:
        out = readout(call_model(model, batch))
        return (divergence(out, refs[i], kind) * weights[i].double()).sum() / total

    return loss


def user_loss(inputs: Inputs, batches: Sequence[Any]) -> BatchLoss:
    """The task loss ``Inputs.loss(output, batch)`` (a batch mean), weighted by batch size into a mean over rows."""
    sizes = [batch_rows(inputs.feed(b)) for b in batches]
    total = sum(sizes)

    def loss(model: nn.Module, batch: Any, i: int) -> torch.Tensor:
        return inputs.loss(call_model(model, inputs.feed(batch)), batch) * (sizes[i] / total)

    return loss


def hutchinson(
    model: nn.Module, params: Sequence[torch.Tensor], batches: Sequence[Any], loss: BatchLoss, *,
    tol: float, max_iter: int, min_iter: int, seed: int, progress: Any = None, joint: bool = True,
    feed: Callable[[Any], Any] = lambda batch: batch,
) -> tuple[list[float], list[float], int]:
    """Per-parameter Hessian traces with their standard errors, and the iterations used.

    ``feed`` gives what the model is called with from a batch (for the error on a NaN product).
    ``joint``: one Hessian-vector product per iteration probes every layer at once
    (cheap; cross-layer blocks add variance). Otherwise one product per layer with
    the probe zero elsewhere: ``len(params)`` times the work, no cross-layer variance.
    """
    gen = torch.Generator().manual_seed(seed)
    n = len(params)
    mean, m2 = [0.0] * n, [0.0] * n
    it = 0
    with only_grads_for(model, params):
        while it < max_iter:
            vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(device=p.device, dtype=p.dtype) for p in params]
            sample = [0.0] * n
            for i, batch in enumerate(batches):
                # a layer the output does not depend on (MiniLM's pooler under last_hidden_state) has no gradient: trace 0
                grads = torch.autograd.grad(_differentiable(loss(model, batch, i), "hessian"), params, create_graph=True, allow_unused=True)
                for group in ([range(n)] if joint else [[k] for k in range(n)]):
                    used = [k for k in group if grads[k] is not None and grads[k].requires_grad]
                    if not used:
                        continue
                    dot = sum((grads[k] * vs[k]).sum() for k in used)
                    hvs = torch.autograd.grad(dot, [params[k] for k in used], retain_graph=not joint, allow_unused=True)
                    for k, hv in zip(used, hvs):
                        if hv is not None:
                            sample[k] += float((hv * vs[k]).sum())
                if not all(map(math.isfinite, sample)):  # at once: the remaining max_iter passes could only give NaN too
                    raise _non_finite("hessian", "a Hessian-vector product", model, batches, i, params[0].dtype, feed)
            it += 1
            for k in range(n):  # Welford's running mean and variance
                delta = sample[k] - mean[k]
                mean[k] += delta / it
                m2[k] += delta * (sample[k] - mean[k])
            ses = [math.sqrt(m2[k] / (it - 1) / it) if it > 1 else math.inf for k in range(n)]
            worst = max(se / max(abs(m), 1e-30) for se, m in zip(ses, mean))
            if progress is not None:
                progress.update(1)
                progress.set_postfix(rel_se=f"{worst:.3f}")
            if it >= max(2, min_iter) and worst <= tol:
                break
    return mean, ses, it


@register_metric(
    "hessian", "Hessian trace per layer (Hutchinson, Rademacher vectors) times ||Q(W)-W||^2 / n", steps="max_iter",
    n_samples=32, rows_per_batch=32, tol=0.05, max_iter=40, min_iter=10, seed=0, output_kind="auto", probe="joint",
    choices={"output_kind": OUTPUT_KINDS, "probe": ("joint", "layerwise")},
)
def hessian_metric(inputs: Inputs, settings: Mapping[str, Any], progress: Any = None) -> MetricOutput:
    batches = subsample(inputs.batches, settings["n_samples"], settings["rows_per_batch"])
    loss = user_loss(inputs, batches) if inputs.loss is not None else divergence_loss(inputs, batches, settings["output_kind"])
    modules = inputs.modules()
    params = [m.weight for m in modules]
    traces, ses, iters = hutchinson(
        inputs.model, params, batches, loss, tol=settings["tol"], max_iter=settings["max_iter"],
        min_iter=settings["min_iter"], seed=settings["seed"], progress=progress, joint=_joint(settings["probe"]), feed=inputs.feed,
    )
    note = _unconverged(inputs, traces, ses, iters, settings)
    entries, stats = [], {}
    _scoring(progress, len(inputs.layers))
    for layer, module, options, trace, se in zip(inputs.layers, modules, inputs.options, traces, ses):
        n = module.weight.numel()
        stats[layer.name] = {"trace": trace, "trace_stderr": se, "n_params": float(n), "iterations": float(iters)}
        for choice, delta in inputs.perturbations(layer, module, options):
            sq = float(delta.double().pow(2).sum())
            # a trace is never below 0 for the divergence (its Hessian is Gauss-Newton), yet a noisy estimate can be; a
            # negative score would rank the layer's coarsest option best, so a score is at least 0 (stats keep the estimate)
            score = finite(max(trace, 0.0) / n * sq, f"hessian score of {layer.name} at {choice.name}")
            entries.append(Entry(layer.name, choice.name, score, se / n * sq))
        _step(progress)
    return MetricOutput(tuple(entries), stats, (note,) if note else ())


def _unconverged(inputs: Inputs, traces: Sequence[float], ses: Sequence[float], iters: int, settings: Mapping[str, Any]) -> str | None:
    """A note when the estimate stopped at ``max_iter`` short of ``tol``: with the defaults the joint probe does on
    digits-cnn (13-80% per layer), and layers whose traces differ by less than that are ranked by noise."""
    relative = [se / max(abs(t), 1e-30) for t, se in zip(traces, ses)]  # as the loop's test (an unused layer: 0 of 0)
    worst = max(range(len(relative)), key=relative.__getitem__, default=None)
    if worst is None or iters < settings["max_iter"] or relative[worst] <= settings["tol"]:
        return None
    if not math.isfinite(relative[worst]):  # one iteration: no spread to estimate one from ('up to infx of it', it said)
        return (f"hessian stopped at max_iter={settings['max_iter']}, one iteration, which estimates no standard error: each "
                "trace is one random probe's, and the layers are ranked by its noise; --set max_iter=N (10 or more) estimates them")
    shown = _share(relative[worst]) if relative[worst] < 100 else f"{relative[worst]:.3g}x"
    return (f"hessian stopped at max_iter={settings['max_iter']} with a trace's standard error up to {shown} of it "
            f"(layer {inputs.layers[worst].name!r}), above tol={settings['tol']}: layers closer than that are ranked by noise; "
            f"--set max_iter=N{' (or probe=layerwise, no cross-layer noise)' if settings.get('probe') == 'joint' else ''} estimates them "
            "closer")  # (a layerwise run was offered the probe it ran with)


def _share(ratio: float) -> str:
    """A ratio as a percentage to two significant digits below 10% ('0.29%'): a whole percent read '0%' for 0.29%,
    below the tolerance of 0.002 the same note said it was above."""
    percent = 100 * ratio
    return f"{percent:.2g}%" if percent < 10 else f"{percent:.0f}%"


def _joint(probe: str) -> bool:
    if probe not in ("joint", "layerwise"):
        raise AutoqError(f"hessian probe must be 'joint' (one product for all layers) or 'layerwise' (one per layer), not {probe!r}")
    return probe == "joint"


def softmax_residuals(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random rows with covariance ``diag(p) - p p^T`` for ``p = softmax(logits)`` (the Fisher of a softmax
    in its logits): ``sqrt(p) * z - p * (sqrt(p) . z)``, Rademacher ``z`` drawn on the CPU generator, so the
    draws are the same on any device."""
    p = torch.softmax(logits.double(), -1)
    z = (torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(device=p.device, dtype=p.dtype)
    root = p.sqrt()
    return root * z - p * (root * z).sum(-1, keepdim=True)


def sampled_fisher(
    model: nn.Module, params: Sequence[torch.Tensor], batches: Sequence[Any], output_kind: str, draws: int, seed: int,
    progress: Any = None, feed: Callable[[Any], Any] = lambda batch: batch,
) -> tuple[list[torch.Tensor], list[float]]:
    """Diagonal Fisher per parameter, averaged over output positions (see the module docstring), and the standard
    error of each one's trace over the (draw, batch) passes (`_ratio_stderr`)."""
    gen = torch.Generator().manual_seed(seed)
    mask_at = mask_position(model)
    fisher = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    traces: list[list[float]] = [[] for _ in params]  # per pass, for the standard error
    position_counts: list[float] = []
    total = 0.0
    kind = None
    with only_grads_for(model, params):
        for _ in range(draws):
            for b, batch in enumerate(batches):
                fed = feed(batch)  # the inputs of an (inputs, labels) batch: its attention mask with them
                raw = call_model(model, fed)
                if kind is None:  # decided on the raw output: a bare tensor is logits, last_hidden_state is not
                    kind = resolve_output_kind(output_kind, raw)
                out = readout(raw)
                w = position_weights(fed, out, mask_at).double()
                if kind == "logits":
                    flat = out.reshape(-1, out.shape[-1]).double()
                    per_pos = (flat * softmax_residuals(flat.detach(), gen)).sum(-1).reshape(w.shape)
                else:
                    noise = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device)
                    per_pos = 0.5 * (out.double() - out.detach().double() - noise).pow(2)
                    per_pos = per_pos.sum(-1) if out.dim() > 1 else per_pos
                grads = torch.autograd.grad(_differentiable((per_pos * w).sum(), "fisher"), params, allow_unused=True)
                for f, g, t in zip(fisher, grads, traces):
                    if g is None:  # a layer the output does not depend on
                        t.append(0.0)
                        continue
                    square = g.double().pow(2)
                    f += square
                    t.append(float(square.sum()))
                # a pass's trace is finite exactly when its gradients are (their float64 squares cannot overflow)
                if not all(math.isfinite(t[-1]) for t in traces):
                    raise _non_finite("fisher", "a gradient", model, batches, b, params[0].dtype, feed)
                position_counts.append(float(w.sum()))
                total += position_counts[-1]
            if progress is not None:
                progress.update(1)
    return [f / total for f in fisher], [_ratio_stderr(t, position_counts) for t in traces]


def _ratio_stderr(sums: Sequence[float], counts: Sequence[float]) -> float:
    """Standard error of ``sum(sums) / sum(counts)`` over the passes (the ratio estimator's, to first order); inf for one.

    One pass's squared gradient sums its rows' terms and their cross terms, zero in expectation but not in a draw: those
    grow with the rows as fast as the signal does, so more rows per batch leave the error where it was, more passes
    (``draws``, or batches through ``n_samples``) shrink it as one over their square root."""
    n = len(sums)
    if n < 2:
        return math.inf
    ratio = sum(sums) / sum(counts)
    spread = sum((s - ratio * c) ** 2 for s, c in zip(sums, counts)) / (n - 1)
    return math.sqrt(n * spread) / sum(counts)


@register_metric(
    "fisher", "diagonal Fisher information (squared gradients of residuals drawn from the model's output distribution) weighted by (Q(W)-W)^2", steps="draws",
    n_samples=128, rows_per_batch=32, draws=4, seed=0, output_kind="auto", choices={"output_kind": OUTPUT_KINDS},
)
def fisher_metric(inputs: Inputs, settings: Mapping[str, Any], progress: Any = None) -> MetricOutput:
    batches = subsample(inputs.batches, settings["n_samples"], settings["rows_per_batch"])
    modules = inputs.modules()
    fisher, ses = sampled_fisher(inputs.model, [m.weight for m in modules], batches, settings["output_kind"], settings["draws"], settings["seed"], progress, inputs.feed)
    entries, stats = [], {}
    _scoring(progress, len(inputs.layers))
    traces = [float(f.sum()) for f in fisher]
    for layer, module, options, f, trace, se in zip(inputs.layers, modules, inputs.options, fisher, traces, ses):
        f2d = layout_2d(module, f)  # float64 throughout: an fp16 model's small Fisher entries must not flush to 0
        stats[layer.name] = {"fisher_trace": trace, "fisher_trace_stderr": se, "n_params": float(f.numel())}
        for choice, delta in inputs.perturbations(layer, module, options):
            entries.append(Entry(layer.name, choice.name, finite(float((f2d * delta.double().pow(2)).sum()), f"fisher score of {layer.name} at {choice.name}")))
        _step(progress)
    note = _noisy_fisher(inputs, traces, ses, settings["draws"], len(batches))
    return MetricOutput(tuple(entries), stats, (note,) if note else ())


FISHER_NOTE_ABOVE = 0.25  # a trace's standard error, as a share of it, past which the note below is written


def _noisy_fisher(inputs: Inputs, traces: Sequence[float], ses: Sequence[float], draws: int, n_batches: int) -> str | None:
    """A note naming the layer whose Fisher trace is least certain, when its standard error is above
    `FISHER_NOTE_ABOVE` of it, and the settings that shrink it (not rows_per_batch: `_ratio_stderr`)."""
    relative = [se / t if t > 0 else 0.0 for t, se in zip(traces, ses)]  # a layer the output does not use: 0 of 0
    worst = max(range(len(relative)), key=relative.__getitem__, default=None)
    if worst is None or relative[worst] <= FISHER_NOTE_ABOVE:
        return None
    passes = f"{draws} draw(s) x {n_batches} batch(es)"
    if not math.isfinite(relative[worst]):
        return (f"fisher made one pass ({passes}), which estimates no standard error: the layers are ranked by one draw's "
                "noise; --set draws=N (4 or more) estimates them")
    return (f"fisher's trace of layer {inputs.layers[worst].name!r} has a standard error of {_share(relative[worst])} of it "
            f"({passes}): layers closer than that are ranked by noise; --set draws=N (or n_samples=N, more batches; not "
            "rows_per_batch) estimates them closer, the error shrinking as one over the square root of the passes")


def _scoring(progress: Any, n_layers: int) -> None:
    """Start the bar over for the second phase, quantizing and scoring every (layer, option): 80% of a SmolLM2 fisher
    table's time, which ran under a bar already full after its gradient passes."""
    if progress is not None and hasattr(progress, "reset"):
        base = (getattr(progress, "desc", "") or "sensitivity").removesuffix(": ")
        progress.set_description(f"{base} (scoring layers)", refresh=False)
        progress.reset(total=n_layers)


def _step(progress: Any) -> None:
    if progress is not None:
        progress.update(1)
