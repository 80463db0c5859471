"""The metric registry as a plug-in author meets it: names that can be read back, read-only defaults, and a cache
that tells one version of a plug-in (metric or PTQ method) from the next."""

from __future__ import annotations

import pytest
import torch
from tiny_models import mlp, space_for

from autoq.builtin.workload import cache_dir
from autoq.choice import LayerChoice
from autoq.errors import AutoqError
from autoq.ptq import register_method
from autoq.ptq import registry as ptq_registry
from autoq.quant import QuantSpec, quantize
from autoq.sensitivity import compute_table
from autoq.sensitivity import registry as metric_registry
from autoq.sensitivity.registry import MetricOutput, get_metric, register_metric, resolve_settings
from autoq.sensitivity.table import Entry


@pytest.fixture
def fresh_registries(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(metric_registry, "_METRICS", metric_registry._METRICS.copy())
    monkeypatch.setattr(ptq_registry, "_METHODS", ptq_registry._METHODS.copy())


@pytest.mark.parametrize("name", ["auto", "none", "w/abs", "my table.json", "scores.csv", "Scores.CSV", "a:b", ""])
def test_names_seed_from_would_read_otherwise_are_refused(name, fresh_registries):
    """``--seed-from w/abs`` was read as a path to a table file, ``auto`` and ``none`` are its own words."""
    with pytest.raises(ValueError, match="cannot register sensitivity metric"):
        register_metric(name, "x")(lambda inputs, settings, progress: MetricOutput(()))
    assert name not in metric_registry._METRICS


def test_defaults_cannot_be_changed_through_the_registry():
    """``get_metric('kl').defaults['n_samples'] = 2`` changed kl's default for the rest of the process."""
    info = get_metric("kl")
    with pytest.raises(TypeError):
        info.defaults["n_samples"] = 2  # type: ignore[index]
    assert resolve_settings(info, None)["n_samples"] == info.defaults["n_samples"] != 2


@pytest.mark.parametrize("metric", ["fisher", "hessian"])
def test_a_seed_torch_cannot_take_is_refused_before_the_model_loads(metric):
    """``--set seed=99999999999999999999`` overflowed torch's generator after the model had loaded (a raw ValueError)."""
    info = get_metric(metric)
    with pytest.raises(AutoqError, match=rf"setting seed=4294967296 of sensitivity metric '{metric}' must be an integer from 0 to 2\*\*32 - 1"):
        resolve_settings(info, {"seed": 2**32})
    assert resolve_settings(info, {"seed": 2**32 - 1})["seed"] == 2**32 - 1
    torch.Generator().manual_seed(2**32 - 1)  # the largest kept is one torch takes


def test_choices_need_a_default_among_them(fresh_registries):
    """A setting with named choices and a default outside them (or none) could never be left at its default."""
    for defaults in ({"mode": "z"}, {}):
        with pytest.raises(ValueError, match=r"^sensitivity metric 'c': choices for 'mode' need a default among them \(mode='a', say\)$"):
            register_metric("c", "d", choices={"mode": ("a", "b")}, **defaults)
    assert "c" not in metric_registry._METRICS


def test_the_bar_counts_the_callers_setting_of_its_steps():
    """A metric whose bar counts iterations counts the run's own max_iter, not its default."""
    info = get_metric("hessian")
    assert info.steps == "max_iter" and info.n_steps(None, resolve_settings(info, {"max_iter": 5, "min_iter": 2})) == 5


def test_a_plugin_metrics_flag_stays_a_bool_and_none_is_only_all_for_a_row_count(fresh_registries):
    """True is kept as True (a cache key of 1 would mix it up with a count); None means "all" for n_samples and
    rows_per_batch only: a None max_iter is refused like any other non-number."""
    register_metric("flagged", "d", flag=False, n_samples=8)(lambda inputs, settings, progress: MetricOutput(()))
    settings = resolve_settings(get_metric("flagged"), {"flag": True, "n_samples": None})
    assert settings["flag"] is True and settings["n_samples"] is None
    with pytest.raises(AutoqError, match=r"^setting max_iter=None of sensitivity metric 'hessian' must be a whole number of at least 1, like its default 40$"):
        resolve_settings(get_metric("hessian"), {"max_iter": None})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"max_iter": True}, r"max_iter=True of sensitivity metric 'hessian' must be a whole number of at least 1, like its default 40$"),
    ({"tol": True}, r"tol=True of sensitivity metric 'hessian' must be a positive number, like its default 0.05$"),
    ({"tol": 0}, r"tol=0 of sensitivity metric 'hessian' must be a positive number"),
    ({"tol": float("nan")}, r"tol=nan of sensitivity metric 'hessian' must be a positive number"),
    ({"n_samples": 0.0}, r"n_samples=0.0 of sensitivity metric 'hessian' must be a whole number of at least 1 \(or none: all\), like its default 32$"),
    ({"min_iter": 3, "max_iter": 2}, r"min_iter=3 of sensitivity metric 'hessian' is above max_iter=2; raise max_iter \(--set max_iter=3\) or lower "
                                     r"min_iter \(at least 2\)$"),
])
def test_a_bool_a_number_short_of_positive_and_a_min_iter_above_max_iter_are_refused(overrides, message):
    """A bool is no count nor tolerance, a tolerance of 0 or nan is no tolerance, 0.0 rows gets no "write it as 0"
    advice, and a max_iter of 2 can still take min_iter's least, 2."""
    with pytest.raises(AutoqError, match="^setting " + message):
        resolve_settings(get_metric("hessian"), overrides)


NORM_METRIC = """
def weight_norm(inputs, settings, progress):
    entries = []
    for layer, opts in zip(inputs.layers, inputs.options):
        for choice in opts:
            entries.append(Entry(layer.name, choice.name, FACTOR * float(inputs.quantized(layer, choice).norm())))
        progress.update(1)
    return MetricOutput(tuple(entries))
"""


def test_a_plugin_metric_edited_between_runs_is_not_read_from_the_cache(fresh_registries):
    """The cache was keyed by the metric's name: version 2 of a user's metric got version 1's table back."""
    model = mlp()
    data = [torch.randn(8, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    space = space_for(model)

    base = metric_registry._METRICS

    def table(factor: str):
        metric_registry._METRICS = base.copy()  # the fixture puts the registry back
        scope = {"Entry": Entry, "MetricOutput": MetricOutput}
        exec(NORM_METRIC.replace("FACTOR", factor), scope)  # noqa: S102  (a user's file, version by version)
        register_metric("wnorm", "weight norm")(scope["weight_norm"])
        return compute_table(model, data, space.layers, space.options, "wnorm", progress=False)

    one, again = table("1"), table("1")
    assert one.seconds == again.seconds  # the same code: a cache hit
    thousand = table("1000")  # edited: not the cached table
    assert thousand.entries[0].score == pytest.approx(1000 * one.entries[0].score)


def test_a_plugin_method_edited_between_runs_is_not_read_from_the_cache(fresh_registries):
    model = mlp()
    data = [torch.randn(8, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    layers = space_for(model).layers
    options = [[LayerChoice(QuantSpec(4, "channel"), "mine")] for _ in layers]

    base = ptq_registry._METHODS

    def table(source: str):
        ptq_registry._METHODS = base.copy()  # the fixture puts the registry back
        register_method("mine")(eval(source, {"quantize": quantize, "QuantSpec": QuantSpec}))
        return compute_table(model, data, layers, options, "sqnr", progress=False)

    first = table("lambda w, spec, stats=None: quantize(w, spec)")
    assert table("lambda w, spec, stats=None: quantize(w, spec)").seconds == first.seconds
    clipped = table("lambda w, spec, stats=None: quantize(w.clamp(-0.05, 0.05), spec)")
    assert clipped.seconds != first.seconds and clipped.entries != first.entries


def test_a_partial_is_keyed_by_its_arguments():
    """A method registered as functools.partial was keyed by 'functools.partial' alone: two configurations shared a table."""
    import functools

    from autoq.sensitivity.compute import code_digest

    def clip(weight, spec, stats=None, frac=1.0):
        return quantize(weight.clamp(-frac, frac), spec)

    assert code_digest(functools.partial(clip, frac=0.5)) != code_digest(functools.partial(clip, frac=0.25))
    assert code_digest(functools.partial(clip, frac=0.5)) == code_digest(functools.partial(clip, frac=0.5))


@pytest.mark.parametrize("make, message", [
    (lambda layer, choice: Entry(layer.name, choice.name, float("nan")), r"returned the score nan for \(.*\); a score is a finite number"),
    (lambda layer, choice: Entry(layer.name, choice.weight.name, 1.0), r"returned an entry for option 'int\d-ch-asym' of layer .*: an Entry's option is the choice's name"),
    (lambda layer, choice: Entry("nosuch", choice.name, 1.0), "returned an entry for layer 'nosuch', which it was not asked to score"),
    (lambda layer, choice: (layer.name, choice.name, 1.0), "returned an entry of type tuple"),
    (None, "returned a list; a metric returns MetricOutput"),
])
def test_a_plugin_metric_returning_what_no_table_holds_is_named(make, message, fresh_registries):
    """A NaN table was cached and failed the ILP later in scipy's words; a wrong option name said 'the same (layer,
    option) twice', naming neither the metric nor the mistake; a list failed with an AttributeError."""
    model = mlp()
    data = [torch.randn(8, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    space = space_for(model)

    @register_metric("broken", "a plug-in's mistake")
    def broken(inputs, settings, progress):
        entries = [make(layer, choice) for layer, opts in zip(inputs.layers, inputs.options) for choice in opts[:1]] if make else []
        return MetricOutput(tuple(entries)) if make else entries

    with pytest.raises(AutoqError, match=f"sensitivity metric 'broken' {message}"):
        compute_table(model, data, space.layers, space.options, "broken", progress=False)
    assert not list((cache_dir() / "sensitivity").glob("broken-*"))  # nothing was cached


def test_a_plugin_metric_with_numpy_scores_writes_tables_that_read_back(fresh_registries, tmp_path):
    """np.float32 scores failed the cache's JSON write after the metric had run; np.float64 ones were written to the
    CSV as 'np.float64(0.25)', which the CSV reader then refused."""
    import numpy as np

    from autoq.sensitivity import SensitivityTable

    model = mlp()
    data = [torch.randn(8, 6, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    space = space_for(model)

    @register_metric("numpy-scores", "scores as numpy scalars")
    def numpy_scores(inputs, settings, progress):
        entries = [Entry(layer.name, choice.name, np.float32(k + 0.25), np.float64(0.5))
                   for layer, opts in zip(inputs.layers, inputs.options) for k, choice in enumerate(opts)]
        return MetricOutput(tuple(entries), {layer.name: {"norm": np.float32(2.5)} for layer in inputs.layers})

    table = compute_table(model, data, space.layers, space.options, "numpy-scores", progress=False)  # cached as JSON
    table.save(tmp_path / "t.json")
    table.save(tmp_path / "t.csv")
    for suffix in ("json", "csv"):
        back = SensitivityTable.load(tmp_path / f"t.{suffix}")
        assert [(e.score, e.stderr) for e in back.entries] == [(e.score, e.stderr) for e in table.entries]
        assert all(type(e.score) is float and e.score % 1 == 0.25 for e in back.entries)
    assert SensitivityTable.load(tmp_path / "t.json").stats(space.names[0]) == {"norm": 2.5}


def _every_pair(inputs) -> list[Entry]:
    return [Entry(layer.name, choice.name, 1.0) for layer, opts in zip(inputs.layers, inputs.options) for choice in opts]


@pytest.mark.parametrize("entries, notes, message", [
    (lambda inputs: _every_pair(inputs) + _every_pair(inputs)[:1], (), r"returned two entries for \(\S+, \S+\); score each \(layer, option\) once"),
    # four of the layer's options, and dots for the rest: not read as the whole list
    (lambda inputs: [Entry(inputs.layers[0].name, "int4", 1.0)], (), r"returned an entry for option 'int4' .*, not one of its options "
                                                                     r"\(([^,()]+, ){4}\.\.\.\): an Entry's option is the choice's name"),
    (_every_pair, "one warning", "returned notes 'one warning'; notes are a tuple of strings, one warning each"),  # not one per letter
])
def test_a_plugin_metric_scoring_a_pair_twice_an_unknown_option_or_notes_of_one_string_is_named(entries, notes, message, fresh_registries):
    model = mlp()
    space = space_for(model)
    assert all(len(opts) > 4 for opts in space.options)
    register_metric("broken", "a plug-in's mistake")(lambda inputs, settings, progress: MetricOutput(tuple(entries(inputs)), notes=notes))
    with pytest.raises(AutoqError, match=f"^sensitivity metric 'broken' {message}"):
        compute_table(model, [torch.randn(8, 6)], space.layers, space.options, "broken", progress=False)


def test_a_plugin_metrics_notes_are_shown_and_a_searchs_set_advice_says_where_to_run_it(fresh_registries, caplog):
    """Notes are said as the table is computed; the advice to '--set' a setting is for 'autoq sensitivity' only where a
    search seeds from the table, and says so."""
    model = mlp()
    space = space_for(model)
    register_metric("noted", "notes a setting")(lambda inputs, settings, progress: MetricOutput(tuple(_every_pair(inputs)),
                                                                                               notes=("pass --set n=2",)))
    said = []
    for seeding in (False, True):
        caplog.clear()
        with caplog.at_level("INFO", logger="autoq"):
            compute_table(model, [torch.randn(8, 6)], space.layers, space.options, "noted", use_cache=False, progress=False, seeding=seeding)
        said.append([r.getMessage() for r in caplog.records if "--set n=2" in r.getMessage()])
    assert said[0] == ["pass --set n=2"]
    assert len(said[1]) == 1 and said[1][0].startswith("pass --set n=2 (settings of 'autoq sensitivity --metric noted --set ...', run with")
