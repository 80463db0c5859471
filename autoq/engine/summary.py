"""The short text a search ends with: the frontier table, the gain over uniform, where to look."""

from __future__ import annotations

import math
import shlex

from autoq.engine.result import Point, SearchResult, distinct_assignments
from autoq.latency import format_latency_us


def format_size(n: int, binary: bool = False) -> str:
    """Decimal units, as budgets read them (MB = 10^6 bytes), in the one that keeps the sizes of a small model apart:
    digits-cnn's points all read '0.02 MB'. ``binary``: KiB, MiB, GiB (2^10 ...), for a budget typed in them."""
    scales = (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)) if binary else (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))
    for unit, scale in scales[:2]:
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / scales[2][1]:.1f} {scales[2][0]}"


def format_quality(q: float, sign: bool = False) -> str:
    """A quality as the summary, the runs' descriptions and ``autoq runs`` show it: 4 decimals (a cosine, an accuracy),
    or 4 significant digits below 0.1, where a ``-loss`` lives: -1.44e-4 and -5.4e-5 both read -0.0001, and a frontier of
    four distinct points looked like one point repeated."""
    plus = "+" if sign else ""
    if not math.isfinite(q) or q == 0 or abs(q) >= 0.1:
        return f"{q:{plus}.4f}"
    return f"{q:{plus}#.4g}"


def _fmt_latency(p: Point) -> str:
    return f"{format_latency_us(p.latency_us):>12}" if p.latency_us is not None else ""


def export_command(run_id: str | None, tracking_uri: str, name_store: bool = False, plugins: str = "", module: bool = False,
                   shell: bool = False) -> str:
    """The ``autoq export`` command line for an MLflow run, naming its store (``name_store``: a SQLite store by its absolute
    path, for a run's MLflow description, read where no folder can be assumed). ``shell``: printed by a command, whose
    ``$MLFLOW_TRACKING_URI`` is the shell's: a store that is the default through it goes unnamed. Else always named:
    ``mlflow.set_tracking_uri`` sets the variable in a pipeline's process only, and the command left out a store the
    shell knew nothing of;
    ``plugins``: the search's ``plugins`` param (quoted, space-separated), each added as ``--plugin``. ``module``: the search
    was of an ``nn.Module`` passed from Python, which no command line can name: the ``autoq.export`` call instead (the
    command printed for it was refused, "pass the model to export")."""
    from autoq.tracking import absolute_uri, default_tracking_uri
    from autoq.tracking.mlflow_logger import shown_uri

    uri = shown_uri(absolute_uri(tracking_uri) if name_store else tracking_uri)  # a run's description is the team's to read
    if module:
        return f"autoq.export(model, {run_id!r}, 'quantized', tracking_uri={shown_uri(absolute_uri(tracking_uri))!r})   # model: the nn.Module searched"
    store = "" if shell and not name_store and tracking_uri == default_tracking_uri() else f" --tracking-uri {shlex.quote(uri)}"
    extra = "".join(f" --plugin {shlex.quote(p)}" for p in shlex.split(plugins) if p != "none")
    return f"autoq export --run-id {run_id}{store}{extra} --out quantized"


def open_command(tracking_uri: str, run_id: str | None) -> str:
    """How to see a run: a tracking server's page for it (its UI is the server), else ``mlflow ui`` on the store (which
    refuses a server's URI)."""
    from urllib.parse import urlsplit, urlunsplit

    from autoq.tracking.mlflow_logger import shown_uri

    if tracking_uri.startswith(("http://", "https://")):
        page = urlunsplit(urlsplit(shown_uri(tracking_uri))._replace(query="", fragment=""))
        return f"{page.rstrip('/')}/#/runs/{run_id}   (in a browser)"
    return f"mlflow ui --backend-store-uri {shlex.quote(shown_uri(tracking_uri))}"  # a database's password hidden, as export's


def format_summary(result: SearchResult, finished: bool = True, module: bool | None = None, deleted: int = 0, shell: bool = False) -> str:
    """The closing summary. ``finished=False``: a search read back from MLflow that did not end (killed, or still
    running): its parent run holds no frontier files yet, so the export names the best trial's own run. ``module``: a
    search of a module passed from Python (its run's ``model_source`` is ``none``): the export is a Python call.
    ``deleted``: trial runs the search logged that are deleted in MLflow since (``result`` holds those left).
    ``module=None``: the result's own ``module`` (a Python search of its own module printed the command line's export).
    ``shell``: printed by an ``autoq`` command (see `export_command`)."""
    from autoq.tracking.mlflow_logger import credentials_note, shown_uri

    module = result.module if module is None else module

    source = result.points[0].latency_source if result.points else None
    objectives = "quality, bits, latency" if source else "quality, bits"
    reference = format_quality(result.reference_quality) if math.isfinite(result.reference_quality) else "not recorded"
    runs = bool(result.tracking_uri) and any(p.run_id for p in result.frontier)  # the ids autoq export --run-id takes
    binary = result.budget.binary_size  # sizes in the budget's units: 29.53 MiB within 30MiB read '30.96 MB'
    lines = [
        f"Pareto frontier ({objectives}) within {result.budget.shown} ({len(result.frontier)} of {len(result.points)} evaluated trials; quality = {result.metric}; unquantized = {reference}):",
        f"  {'trial':>5}  {'quality':>8}  {'eff.bits':>8}  {'size':>10}  " + (f"{'latency':>12}  " if source else "") + (f"{'MLflow run id':<32}  " if runs else "") + "choices",
    ]
    for p in result.frontier:
        mark = " (uniform)" if p.uniform else ""
        latency = f"{_fmt_latency(p)}  " if source else ""
        run_id = f"{p.run_id or '-':<32}  " if runs else ""
        lines.append(f"  {p.trial:>5}  {format_quality(p.quality):>8}  {p.effective_bits:>8.3f}  {format_size(p.size_bytes, binary):>10}  {latency}{run_id}{p.assignment.summary()}{mark}")
    if source:
        kind = "an ESTIMATE from published peaks, not a measurement" if source.startswith("estimate:") else "from a measured kernel table"
        lines.append(f"  latency = sum of the searched layers' GEMMs (fp16 or quantized), source {source} ({kind})")
    best, uni = result.best, result.best_uniform
    lines.append("")
    at_latency = f" and {format_latency_us(best.latency_us)} [{source}]" if best.latency_us is not None else ""
    at_size = f" and {format_size(best.size_bytes, binary)}" if result.budget.kind == "bytes" else ""  # what the budget limits
    lines.append(f"Best within budget: trial {best.trial}, quality {format_quality(best.quality)} at {best.effective_bits:.3f} bits{at_size}{at_latency}.")
    evaluated, within = result.uniform_coverage
    if uni is not None and (within is None or evaluated >= within):
        lines.append(
            f"Best uniform within budget: trial {uni.trial} ({uni.assignment.summary()}), quality {format_quality(uni.quality)} at {uni.effective_bits:.3f} bits; "
            f"{_gain(best, uni)}."
        )
    elif uni is not None:  # the best of those evaluated is not the best there is: say so, not "within budget"
        ran = len(result.points)
        why = (f"{_deleted_runs(deleted)}, and this reads the runs left" if deleted else
               f"the search ran {_count(ran, 'trial')}, fewer than the {within} baselines, which the optuna strategy evaluates first: "
               "more trials evaluate the rest (a larger --n-trials; a search --timeout or Ctrl-C stopped: its resume)" if ran < within else
               "the strategy proposed no others, or the search stopped before them; the optuna strategy evaluates them first")
        lines.append(
            f"Best uniform evaluated: trial {uni.trial} ({uni.assignment.summary()}), quality {format_quality(uni.quality)} at {uni.effective_bits:.3f} bits; "
            f"{_gain(best, uni)}. Only {evaluated} of the {within} uniform assignments within the budget {'was' if evaluated == 1 else 'were'} "
            f"evaluated ({why}), so a better uniform one may exist."
        )
    elif within == 0:  # a space whose layers share no option has none at all, whatever the budget
        lines.append("No uniform assignment was evaluated, so there is no baseline to compare with: none is within this budget, the space "
                     "gives its layers no option in common, pins cover every layer, or max_uniform_seeds=0 enqueued none.")
    elif deleted:
        lines.append(f"No uniform assignment is among the trial runs left ({_deleted_runs(deleted)}), so there is no baseline to compare "
                     "with here.")
    else:
        lines.append("No uniform assignment was evaluated (none fits this budget, the space has none, or the strategy proposed none).")
    extra = []
    repeats = len(result.points) - distinct_assignments(result.points)
    if repeats:  # late in a long search on a small space most proposals are repeats: more trials then add little
        extra.append(f"{_count(repeats, 'trial')} repeated an earlier one's assignment (the sampler proposed it again; its quality was "
                     "reused, not evaluated again)")
    if result.n_infeasible:
        extra.append(f"{_count(result.n_infeasible, 'over-budget proposal')} {'was' if result.n_infeasible == 1 else 'were'} skipped without evaluation")
    if result.n_failed:
        # where each error is kept: without MLflow there is no run's tag to see
        where = ("see the 'error' tag of each failed MLflow run" if result.tracking_uri else
                 "see the 'error' user attribute of each failed Optuna trial" if result.storage else "the first one's error was warned of")
        extra.append(f"{_count(result.n_failed, 'trial')} failed ({where})")
    one_pass = f" (one evaluation pass: {result.eval_seconds:.2f} s)" if math.isfinite(result.eval_seconds) else ""
    lines.append(f"{_count(len(result.points), 'trial')} in {result.wall_seconds:.0f} s{one_pass}" + (f"; {'; '.join(extra)}." if extra else "."))
    lines.append("")
    store = shown_uri(result.tracking_uri) if result.tracking_uri else ""
    hidden = credentials_note(result.tracking_uri)
    if result.tracking_uri and not finished:
        lines.append(f"MLflow: parent run {result.parent_run_id} in {store}{hidden}: the search has not finished, so it holds no "
                     f"frontier files yet (it writes them as it ends; if it was killed, autoq search --resume {shlex.quote(result.study_name)} does).")
        lines.append(f"  Open it:  {open_command(result.tracking_uri, result.parent_run_id)}")
        lines.append(f"  Export the best point:  {export_command(best.run_id, result.tracking_uri, module=module, shell=shell)}   (its trial's run)")
    elif result.tracking_uri:
        lines.append(f"MLflow: parent run {result.parent_run_id} in {store}{hidden} (frontier.csv, frontier.png, pareto=true tags).")
        lines.append(f"  Open it:  {open_command(result.tracking_uri, result.parent_run_id)}")
        # the best point's own run where it has one: the parent's frontier.json names the best as the search logged it,
        # which a trial run deleted since (left out here, as autoq pareto leaves it out) makes another point than this
        run_id, what = (best.run_id, "its trial's run") if best.run_id else (result.parent_run_id, "the search's run")
        lines.append(f"  Export the best point:  {export_command(run_id, result.tracking_uri, module=module, shell=shell)}   ({what}; or a frontier point's MLflow run id above)")
    if result.storage:
        hidden = " (MLflow keeps it with its password hidden: put yours in place of ***)" if ":***@" in result.storage else ""
        lines.append(f"Optuna study {result.study_name!r} in {result.storage}{hidden}.")
        lines.append(f"  Open it:  optuna-dashboard {shlex.quote(result.storage)}   (pip install optuna-dashboard)")
    return "\n".join(lines)


def closing_note(result: SearchResult) -> str:
    """What a Python search that shows progress ends with (the command line prints `format_summary`): what it found, in
    one line, and where the results are and how to look at them. It ended without a word before."""
    from autoq.tracking.mlflow_logger import credentials_note, shown_uri

    best = result.best
    found = (f"search {result.study_name!r}: {_count(len(result.points), 'trial')} in {result.wall_seconds:.0f} s, best quality "
             f"{format_quality(best.quality)} at {best.effective_bits:.3f} bits (trial {best.trial}, of {len(result.frontier)} on the frontier)")
    if result.tracking_uri:
        where = (f"MLflow parent run {result.parent_run_id} in {shown_uri(result.tracking_uri)}{credentials_note(result.tracking_uri)}; open it: "
                 f"{open_command(result.tracking_uri, result.parent_run_id)}")
    elif result.storage:
        where = f"Optuna study {result.study_name!r} in {shown_uri(result.storage)} (no MLflow: tracking_uri=None)"
    else:
        where = "kept in this result only (tracking_uri=None, storage=None)"
    return f"autoq: {found}.\n  {where}\n  print(autoq.engine.format_summary(result)) shows the frontier; result.apply(model) or autoq.export(...) takes a point"


def _deleted_runs(n: int) -> str:
    """``1 of its trial runs is deleted in MLflow``, ``2 of its trial runs are ...``."""
    return f"{n} of its trial runs {'is' if n == 1 else 'are'} deleted in MLflow"


def _count(n: int, noun: str) -> str:
    """``1 trial``, ``2 trials``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _gain(best: Point, uniform: Point) -> str:
    """How far the search's best point is above the best uniform one, in words where the 4 decimals shown read 0: the
    best point may be that uniform assignment ('+0.0000 better' said it as a gain)."""
    if best.assignment == uniform.assignment:
        return "the best point found is this uniform assignment"
    gain = best.quality - uniform.quality
    if gain == 0 or abs(gain) < 5e-5 * min(1.0, max(abs(best.quality), abs(uniform.quality))):  # relative below 1: a loss of 1e-4 gains 3e-5
        return "the search's best ties it" + (f" ({gain:+.1e} better)" if gain else "")
    shown = f"{gain:+.4f}" if max(abs(best.quality), abs(uniform.quality)) >= 0.1 else format_quality(gain, sign=True)  # as they read
    if float(shown) == 0:  # no tie, yet below the 4 decimals: a gain of 3e-5 at 0.58 read '+0.0000 better'
        shown = f"{gain:+.1e}"
    return f"the search is {shown} better"
