"""Run descriptions for the MLflow UI: what a search found and the command that exports a point.

MLflow shows the ``mlflow.note.content`` tag as Markdown at the top of a run's page (its "Description"),
which is where a user who picks a point in the UI looks first. The search run lists its frontier; each
frontier trial run says how to export itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from autoq.engine.result import Point
from autoq.engine.summary import export_command, format_quality, format_size
from autoq.latency.base import format_latency_us

NOTE_TAG = "mlflow.note.content"
MAX_ROWS = 40  # MLflow caps a tag at 8,000 characters; the rest of the frontier is in frontier.csv


def _source(latency_source: str | None) -> str:
    """A latency's source as the description shows it: an estimate in capitals, as every latency output marks it."""
    return (latency_source or "").replace("estimate:", "ESTIMATE ")


def _cost(point: Point) -> str:
    latency = f", {format_latency_us(point.latency_us)} ({_source(point.latency_source)})" if point.latency_us is not None else ""
    return f"quality {format_quality(point.quality)} at {point.effective_bits:.3f} bits per weight, {format_size(point.size_bytes)}{latency}"


def point_note(point: Point, tracking_uri: str, plugins: str = "", module: bool = False) -> str:
    """The description of a frontier trial's run (neutral: after a resume the point may have left the frontier)."""
    return "\n".join([
        f"**Trial {point.trial}**: {_cost(point)}. The `pareto` tag says whether it is on the search's frontier.",
        "",
        "Export it as a packed model, then run it with `autoq.load(\"quantized\")`:",
        "```",
        export_command(point.run_id or "<run id>", tracking_uri, name_store=True, plugins=plugins, module=module),
        "```",
        f"Add `{'log_to_run=True' if module else '--log-to-run'}` to log it as an MLflow model of this run "
        "(`runs:/<this run's id>/quantized_model`, which `mlflow.pyfunc.load_model` and `autoq.load` take), and "
        f"`{'registered_model_name=NAME' if module else '--registered-model-name NAME'}` to register it as well.",
    ])


def search_note(frontier: Sequence[Point], tracking_uri: str, plugins: str = "", module: bool = False, run_id: str = "") -> str:
    """The description of a search's run: its frontier as a table with run ids, and how to export a point (``plugins``:
    the search's ``plugins`` param, whose names the export must know too)."""
    latency = any(p.latency_us is not None for p in frontier)
    label = ", ".join(sorted({_source(p.latency_source) for p in frontier if p.latency_us is not None}))
    head = "| trial | quality | bits | size |" + (f" latency ({label}) |" if latency else "") + " run id |"
    lines = [
        f"**autoq search**: {len(frontier)} Pareto points (quality up, effective bits down{', latency down' if latency else ''}). "
        "They are the nested trial runs tagged `pareto = true` (filter: `tags.pareto = 'true' and tags.mlflow.parentRunId = "
        f"'{run_id or '<this run id>'}'`; the first alone shows every search's frontier); the plot is `frontier.png`.",
        "",
        head,
        "|" + "---|" * head.count(" |"),
    ]
    for p in frontier[:MAX_ROWS]:
        # as the console and `autoq pareto` print it: at 0.1 us, frontier points of a small model read alike
        us = f" {format_latency_us(p.latency_us)} |" if latency and p.latency_us is not None else " |" if latency else ""
        lines.append(f"| {p.trial} | {format_quality(p.quality)} | {p.effective_bits:.3f} | {format_size(p.size_bytes)} |{us} `{p.run_id or ''}` |")
    if len(frontier) > MAX_ROWS:
        lines.append(f"\n{len(frontier) - MAX_ROWS} more in `frontier.csv`.")
    lines += ["", "Export a point by its run id:", "```", export_command("<run id>", tracking_uri, name_store=True, plugins=plugins, module=module), "```"]
    return "\n".join(lines)
