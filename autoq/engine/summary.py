"""The short text a search ends with: the frontier table, the gain over uniform, where to look."""

from __future__ import annotations

from autoq.engine.result import SearchResult


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def format_summary(result: SearchResult) -> str:
    lines = [
        f"Pareto frontier within {result.budget.text} ({len(result.frontier)} of {len(result.points)} evaluated trials; quality = {result.metric}; unquantized = {result.reference_quality:.4f}):",
        f"  {'trial':>5}  {'quality':>8}  {'eff.bits':>8}  {'size':>10}  choices",
    ]
    for p in result.frontier:
        mark = " (uniform)" if p.uniform else ""
        lines.append(f"  {p.trial:>5}  {p.quality:>8.4f}  {p.effective_bits:>8.3f}  {_fmt_bytes(p.size_bytes):>10}  {p.assignment.summary()}{mark}")
    best, uni = result.best, result.best_uniform
    lines.append("")
    lines.append(f"Best within budget: trial {best.trial}, quality {best.quality:.4f} at {best.effective_bits:.3f} bits.")
    if uni is not None:
        gain = best.quality - uni.quality
        lines.append(
            f"Best uniform within budget: trial {uni.trial} ({uni.assignment.summary()}), quality {uni.quality:.4f} at {uni.effective_bits:.3f} bits; "
            f"the search is {gain:+.4f} better."
        )
    else:
        lines.append("No uniform assignment fits this budget.")
    extra = []
    if result.n_infeasible:
        extra.append(f"{result.n_infeasible} over-budget proposals were skipped without evaluation")
    if result.n_failed:
        extra.append(f"{result.n_failed} trials failed (see their 'error' tags)")
    lines.append(
        f"{len(result.points)} trials in {result.wall_seconds:.0f} s (one evaluation pass: {result.eval_seconds:.2f} s)"
        + (f"; {'; '.join(extra)}." if extra else ".")
    )
    lines.append("")
    if result.tracking_uri:
        lines.append(f"MLflow: parent run {result.parent_run_id} in {result.tracking_uri} (frontier.csv, frontier.png, pareto=true tags).")
        lines.append(f"  Open it:  mlflow ui --backend-store-uri {result.tracking_uri}")
    if result.storage:
        lines.append(f"Optuna study {result.study_name!r} in {result.storage}.")
        lines.append(f"  Open it:  optuna-dashboard {result.storage}   (pip install optuna-dashboard)")
    return "\n".join(lines)
