"""Plug-ins from outside the package reach every way in: ``--plugin`` (a file or a module), ``$AUTOQ_PLUGINS``, the
help texts, and a search that uses a plug-in's method, strategy and sampler by name; and the loader's own rules: how
--plugin is split off, the order and dedup of what is loaded, the errors it says, and a failed file import leaving nothing."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import plugin_space
from test_cli import run_cli

from autoq.errors import AutoqError
from autoq.plugins import import_plugin, load_plugins, missing_plugins, plugin_note, split_plugins

PLUGIN = '''
import optuna

from autoq.engine.strategies import register_strategy, strategy_factory
from autoq.engine.strategy import register_sampler
from autoq.ptq import get_method, register_method


@register_method("rtn-user")
def rtn_user(weight, spec, stats=None):
    return get_method("rtn-minmax")(weight, spec, stats)


register_strategy("mine")(lambda ctx: strategy_factory("random")(ctx))
register_sampler("my-random")(lambda seed: optuna.samplers.RandomSampler(seed=seed))
'''

SPACE = plugin_space("user", ["rtn-user", "rtn-mse"])


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "myplug.py").write_text(PLUGIN)
    (tmp_path / "space.yaml").write_text(SPACE)
    return tmp_path


SEARCH = ("search", "--model", "digits-cnn", "--space", "space.yaml", "--n-trials", "4", "--seed-from", "none", "--tracking-uri", "none",
          "--storage", "none", "--no-progress")


@pytest.mark.parametrize("how", ["file", "module after the command", "environment", "entry point"])
def test_a_plugin_extends_the_names_a_search_takes(folder, how, monkeypatch):
    if how == "file":  # a study kept: its resume needs the plug-in (the last --storage is the one taken)
        args = ["--plugin", "myplug.py", *SEARCH, "--strategy", "mine", "--storage", f"sqlite:///{folder / 'optuna.db'}"]
    elif how == "module after the command":
        args = [*SEARCH, "--strategy", "mine", "--plugin=myplug"]  # the working folder is searched, as by python -m
    elif how == "environment":
        monkeypatch.setenv("AUTOQ_PLUGINS", "myplug")
        args = [*SEARCH, "--sampler", "my-random"]
    else:  # an installed package's entry point, in the group docs/plugins.md names
        info = folder / "myplug-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text("[autoq.plugins]\nmyplug = myplug\n")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
        args = [*SEARCH, "--sampler", "my-random"]
    proc = run_cli(*args, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert ":rtn-user" in proc.stdout
    if how == "file":  # a file by its absolute path: the printed commands work from any folder
        assert f"Plug-ins: add --plugin {folder.resolve() / 'myplug.py'} to the autoq commands above" in proc.stdout
    else:  # no MLflow, no storage: no export or resume command printed to add it to
        assert "Plug-ins:" not in proc.stdout


def test_help_lists_what_plugins_register_and_names_without_them_are_refused(folder):
    helped = run_cli("--plugin", "myplug.py", "search", "--help", cwd=folder)
    assert helped.returncode == 0 and "mine" in helped.stdout and "my-random" in helped.stdout
    unknown = run_cli(*SEARCH, "--strategy", "mine", cwd=folder)
    assert unknown.returncode == 2 and "unknown --strategy 'mine'" in unknown.stderr
    method = run_cli(*SEARCH, cwd=folder)
    assert method.returncode == 2 and "unknown PTQ method 'rtn-user'" in method.stderr and "--plugin MODULE" in method.stderr


@pytest.mark.parametrize(("plugin", "source", "needle"), [
    ("nosuch", None, "cannot find plug-in module 'nosuch'; give an importable module name"),
    ("missing.py", None, "missing.py' does not exist"),
    ("broken.py", "raise RuntimeError('boom')", "plug-in 'broken.py' failed to import: RuntimeError: boom"),
    ("needs.py", "import not_installed_anywhere", "plug-in 'needs.py' failed to import: ModuleNotFoundError"),
    ("clash.py", "from autoq.ptq import register_method\nregister_method('a:b')(print)", "cannot register PTQ method 'a:b'"),
])
def test_a_plugin_that_cannot_load_is_one_line_exit_2(plugin, source, needle, tmp_path):
    if source is not None:
        (tmp_path / plugin).write_text(source)
    proc = run_cli("--plugin", plugin, "runs", cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_plugin_path_that_is_a_folder_or_no_python_file_says_so(tmp_path):
    """'./plug.json' failed with a bare AssertionError, and a folder was said not to exist."""
    from autoq.errors import AutoqError
    from autoq.plugins import import_plugin

    (tmp_path / "plug.json").write_text("{}")
    (tmp_path / "plugs").mkdir()
    with pytest.raises(AutoqError, match=r"plug\.json' is not a \.py file; give a Python file"):
        import_plugin(str(tmp_path / "plug.json"))
    with pytest.raises(AutoqError, match=r"plugs' is a folder; give a \.py file in it, or a package as its module name"):
        import_plugin(f"{tmp_path / 'plugs'}/")


def test_a_plugin_given_twice_loads_once_and_a_missing_value_is_refused(folder, monkeypatch):
    """As a file and as a module (or in $AUTOQ_PLUGINS and on the line) it ran twice: 'already registered'."""
    monkeypatch.setenv("AUTOQ_PLUGINS", "myplug")
    proc = run_cli("--plugin", "myplug.py", *SEARCH, "--strategy", "mine", "--plugin", "myplug", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    monkeypatch.delenv("AUTOQ_PLUGINS")
    for args in (["runs", "--plugin"], ["--plugin=", "runs"]):
        proc = run_cli(*args, cwd=folder)
        assert proc.returncode == 2 and "--plugin needs a module name or a .py file" in proc.stderr, args
    proc = run_cli("--plug", "myplug.py", "runs", cwd=folder)  # no abbreviation that the loader would not see
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_plugin_loaded_by_name_then_by_file_is_the_same_code(folder):
    """The code digest named the module, ``myplug`` by name and ``autoq_plugin_myplug`` from the file: a search's export or
    resume that loaded the unedited plug-in the other way (the printed commands name its file) was refused as edited."""
    stored = ("--storage", f"sqlite:///{folder / 'optuna.db'}", "--study-name", "forms")
    first = run_cli("--plugin", "myplug", *SEARCH, *stored, cwd=folder)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("--plugin", str(folder / "myplug.py"), "search", "--resume", "forms", *stored, "--n-trials", "5",
                      "--tracking-uri", "none", "--no-progress", cwd=folder.parent)
    assert resumed.returncode == 0, resumed.stderr


def test_a_plugin_files_digest_stored_by_an_older_autoq_still_matches(tmp_path, monkeypatch):
    """An older autoq stored a plug-in file's methods by the file's module name: its searches still export and resume."""
    import sys

    from autoq.engine.resume import _same
    from autoq.plugins import load_plugins
    from autoq.ptq import changed_code, plugin_code
    from autoq.ptq import registry as ptq_registry

    (tmp_path / "methodonly.py").write_text(PLUGIN.split("register_strategy(")[0])  # the method alone, in this process
    monkeypatch.setattr(ptq_registry, "_METHODS", ptq_registry._METHODS.copy())
    try:
        load_plugins([str(tmp_path / "methodonly.py")])
    finally:
        sys.modules.pop("autoq_plugin_methodonly", None)
    now, before = plugin_code(["rtn-user"]), plugin_code(["rtn-user"], legacy=True)
    assert now != before
    assert changed_code(before, ["rtn-user"]) == changed_code(now, ["rtn-user"]) == []
    assert changed_code({"rtn-user": "0" * 16}, ["rtn-user"]) == ["rtn-user"]  # an edit is still refused
    assert _same("plugin_code", before, now) and not _same("plugin_code", {"rtn-user": "0" * 16}, now)


def test_the_search_a_table_seeds_carries_the_plugin(folder):
    """The printed 'Seed a search with it' command failed on the plug-in's method it did not load."""
    proc = run_cli("--plugin", "myplug.py", "sensitivity", "--model", "digits-cnn", "--metric", "sqnr", "--space", "space.yaml",
                   "--tracking-uri", "none", "--no-progress", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert f"Seed a search with it: autoq search --plugin {folder.resolve() / 'myplug.py'} --model digits-cnn" in proc.stdout


def test_the_version_is_said_whatever_a_plugin_does(tmp_path, monkeypatch):
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')")
    monkeypatch.setenv("AUTOQ_PLUGINS", "broken")
    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("autoq ")
    assert run_cli("runs", cwd=tmp_path).returncode == 2  # any command loads it, and says why it fails


QUEUE_PLUGIN = '''
from autoq.engine.strategies import register_strategy
from autoq.engine.strategy import QueueStrategy


@register_strategy("first-options")
def first_options(ctx):
    """As docs/plugins.md has it: QueueStrategy(space, source, study name, storage), no resume argument."""
    def source():
        for i in range(len(ctx.space.options[0])):
            yield ctx.space.assignment([min(i, len(opts) - 1) for opts in ctx.space.options])
    return QueueStrategy(ctx.space, source(), ctx.study_name, ctx.storage), [], []
'''


def test_a_plugin_from_the_environment_is_recorded_and_its_search_resumes_only_with_it(tmp_path, monkeypatch):
    """$AUTOQ_PLUGINS' plug-ins were not recorded (an export said 'add --plugin MODULE' naming none); a resume without
    them said only 'unknown --strategy'; a strategy built as the docs say could not be resumed at all ('already exists')."""
    (tmp_path / "queueplug.py").write_text(QUEUE_PLUGIN)
    monkeypatch.setenv("AUTOQ_PLUGINS", "queueplug")
    args = ("--model", "digits-cnn", "--tracking-uri", "none", "--storage", "sqlite:///optuna.db", "--no-progress")
    first = run_cli("search", *args, "--strategy", "first-options", "--seed-from", "none", "--study-name", "q", "--n-trials", "2",
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Plug-ins: add --plugin queueplug to the autoq commands above" in first.stdout
    monkeypatch.delenv("AUTOQ_PLUGINS")
    refused = run_cli("search", *args, "--resume", "q", "--n-trials", "3", cwd=tmp_path)
    assert refused.returncode == 2 and "search 'q' ran with the plug-in(s) queueplug, which this command did not load; add --plugin queueplug" \
        in refused.stderr, refused.stderr
    resumed = run_cli("--plugin", "queueplug", "search", *args, "--resume", "q", "--n-trials", "3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    import optuna

    study = optuna.load_study(study_name="q", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len([t for t in study.trials if t.state.is_finished()]) == 3


def documented_plugin() -> str:
    """The ``myplug.py`` block of docs/plugins.md, as a user copies it."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    block = text.split("```python\n# myplug.py\n", 1)[1].split("```", 1)[0]
    return "# myplug.py\n" + block


def test_the_documented_plugin_runs_and_its_strategy_reads_no_table(tmp_path, monkeypatch):
    """The docs' 'random-again' was registered with the defaults around 'random': a search with it computed a
    sensitivity table it never read, and took a --sampler it ignored."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(cache))
    (tmp_path / "myplug.py").write_text(documented_plugin())
    (tmp_path / "my.yaml").write_text(plugin_space("mine", ["rtn-clip90", "rtn-mse"]))
    args = ("--plugin", "myplug.py", "search", "--model", "digits-cnn", "--space", "my.yaml", "--strategy", "random-again",
            "--tracking-uri", "none", "--storage", "none", "--no-progress")
    proc = run_cli(*args, "--n-trials", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ":rtn-clip90" in proc.stdout
    assert not list(cache.glob("sensitivity/*")), "a table was computed for a strategy that never reads one"
    refused = run_cli(*args, "--sampler", "qmc", cwd=tmp_path)
    assert refused.returncode == 2 and "--strategy random-again proposes by itself" in refused.stderr, refused.stderr


def test_a_plug_in_of_the_wrong_shape_is_refused_where_it_is_registered(monkeypatch):
    """Each went in unchecked: a sampler or strategy without its argument failed in a raw TypeError once the search had
    loaded its model, a method only after every trial, and a metric's steps= naming no setting in a KeyError."""
    from autoq.engine import strategies, strategy
    from autoq.ptq import registry as ptq_registry
    from autoq.sensitivity import registry as metric_registry

    monkeypatch.setattr(strategy, "_SAMPLERS", strategy._SAMPLERS.copy())
    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())
    monkeypatch.setattr(ptq_registry, "_METHODS", ptq_registry._METHODS.copy())
    monkeypatch.setattr(metric_registry, "_METRICS", metric_registry._METRICS.copy())
    with pytest.raises(ValueError, match=r"sampler 'nosig': autoq calls it as nosig\(seed\)"):
        strategy.register_sampler("nosig")(lambda: None)
    with pytest.raises(ValueError, match=r"strategy 'nosig': autoq calls it as nosig\(ctx\)"):
        strategies.register_strategy("nosig")(lambda: None)
    with pytest.raises(ValueError, match=r"PTQ method 'notcallable': 42 is not callable"):
        ptq_registry.register_method("notcallable")(42)
    with pytest.raises(ValueError, match=r"sensitivity metric 'two': autoq calls it as two\(inputs, settings, progress\)"):
        metric_registry.register_metric("two", "d")(lambda inputs, settings: {})
    with pytest.raises(ValueError, match=r"sensitivity metric 'steps': steps='max_iter' names none of its settings \(it has none\)"):
        metric_registry.register_metric("steps", "d", steps="max_iter")
    assert metric_registry.register_metric("fine", "d", steps="n", n=3)(lambda inputs, settings, progress=None: {})
    for name in ("nosig", "notcallable", "two", "steps"):
        assert name not in strategy.sampler_names() + strategies.strategy_names() + ptq_registry.method_names() + metric_registry.metric_names()


def test_a_sampler_or_strategy_that_returns_the_wrong_thing_says_which_and_what_is_right(monkeypatch):
    import optuna
    import torch

    import autoq
    from autoq.engine import strategies, strategy

    monkeypatch.setattr(strategy, "_SAMPLERS", strategy._SAMPLERS.copy())
    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())
    strategy.register_sampler("the-class")(lambda seed: optuna.samplers.RandomSampler)
    strategies.register_strategy("returns-none", reads_scores=False, uses_sampler=False)(lambda ctx: None)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    options = dict(budget="6bits", n_trials=2, seed_from="none", tracking_uri=None, storage=None, progress=False)
    data = [torch.randn(8, 16)]
    with pytest.raises(autoq.AutoqError, match=r"^sampler 'the-class' returned <class 'optuna.samplers._random.RandomSampler'>, not an "
                                               r"optuna.samplers.BaseSampler instance"):
        autoq.search(model, data, lambda m: 1.0, sampler="the-class", **options)
    strategy.register_sampler("cma")(lambda seed: optuna.samplers.CmaEsSampler(seed=seed))  # Optuna's ValueError, mid-search
    with pytest.raises(autoq.AutoqError, match=r"^sampler 'cma' returned a CmaEsSampler, which optimizes one objective, and autoq's "
                                               r"study has 2 .*: pass a multi-objective sampler"):
        autoq.search(model, data, lambda m: 1.0, sampler="cma", **options)
    with pytest.raises(autoq.AutoqError, match=r"^strategy 'returns-none' returned None; a strategy factory returns \(strategy, seeds, uniform\)"):
        autoq.search(model, data, lambda m: 1.0, strategy="returns-none", **options)


def test_a_strategys_proposal_or_seed_outside_the_space_is_refused_naming_it(monkeypatch):
    """A choice no layer offers failed deep in Optuna's ask (a ValueError naming neither strategy nor layer); a layer
    left out was filled by the sampler, and the trial scored an assignment the strategy never proposed."""
    import torch

    import autoq
    from autoq.choice import Assignment
    from autoq.engine import strategies
    from autoq.engine.strategy import QueueStrategy

    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    good = Assignment({"0": "int8-ch-asym:rtn-mse", "2": "int8-ch-asym:rtn-mse"})
    wrong = {"choice": Assignment({"0": "int5-g32-asym:gptq", "2": "int8-ch-asym:rtn-mse"}), "layer left out": Assignment({"2": "int8-ch-asym:rtn-mse"}),
             "not an assignment": {"0": "int8-ch-asym:rtn-mse"}}
    for mistake, proposal in wrong.items():
        strategies.register_strategy(f"proposes-{len(mistake)}", reads_scores=False, uses_sampler=False)(
            lambda ctx, p=proposal: (QueueStrategy(ctx.space, iter([good, p]), ctx.study_name, ctx.storage), [], []))
        strategies.register_strategy(f"seeds-{len(mistake)}", reads_scores=False, uses_sampler=False)(
            lambda ctx, p=proposal: (QueueStrategy(ctx.space, iter([good]), ctx.study_name, ctx.storage), [good, p], []))
    options = dict(budget="8bits", n_trials=3, seed_from="none", tracking_uri=None, storage=None, progress=False)
    data = [torch.randn(8, 16)]
    needles = {"choice": r"'int5-g32-asym:gptq' is not an option of layer '0'", "layer left out": r"has no choice for layer '0'",
               "not an assignment": r"is \{'0': 'int8-ch-asym:rtn-mse'\}, not an Assignment"}
    for mistake, needle in needles.items():
        with pytest.raises(autoq.AutoqError, match=r"^proposal 1 of the strategy's source .*" + needle):
            autoq.search(model, data, lambda m: 1.0, strategy=f"proposes-{len(mistake)}", **options)
        with pytest.raises(autoq.AutoqError, match=rf"^seed 1 of strategy 'seeds-{len(mistake)}' .*" + needle):
            autoq.search(model, data, lambda m: 1.0, strategy=f"seeds-{len(mistake)}", **options)


def test_a_plugin_queue_strategy_with_seeds_resumes_as_it_runs_through(tmp_path, monkeypatch):
    """Its seeds were counted as the source's proposals on resume: the source's own later proposal of a seed was
    skipped, where a search that ran through made it (a repeat it counts as a trial), and the two parted ways."""
    import torch

    import autoq
    from autoq.engine import strategies
    from autoq.engine.strategy import QueueStrategy

    monkeypatch.setattr(strategies, "_STRATEGIES", strategies._STRATEGIES.copy())

    def factory(ctx):
        source = [ctx.space.assignment([i % len(opts) for opts in ctx.space.options]) for i in range(6)]
        return QueueStrategy(ctx.space, iter(source), ctx.study_name, ctx.storage, ctx.resume), [source[2]], []

    strategies.register_strategy("seeded-queue", reads_scores=False, uses_sampler=False)(factory)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    data = [torch.randn(8, 16)]
    options = dict(budget="16bits", strategy="seeded-queue", seed_from="none", tracking_uri=None, study_name="s", progress=False)
    through = autoq.search(model, data, lambda m: 1.0, n_trials=6, storage=f"sqlite:///{tmp_path / 't.db'}", **options)
    stopped = f"sqlite:///{tmp_path / 's.db'}"
    autoq.search(model, data, lambda m: 1.0, n_trials=3, storage=stopped, **options)
    resumed = autoq.search(model, data, lambda m: 1.0, n_trials=6, storage=stopped, resume=True, **options)
    assert [p.assignment for p in through.points][3] == through.points[0].assignment  # the source's repeat of the seed
    assert [p.assignment for p in resumed.points] == [p.assignment for p in through.points]


FAILING_PLUGIN = '''
from autoq.ptq import register_method


@register_method("always-fails")
def always_fails(weight, spec, stats=None):
    raise RuntimeError("this method always fails")
'''


def test_a_resume_keeps_the_retries_the_search_ran_with(tmp_path):
    """--max-retries was not stored: a resume took the default 2, recounted the trials failed for good under it as not
    done, and evaluated many more than --n-trials asked for (2 more asked, 30 evaluated)."""
    from collections import Counter

    import optuna

    (tmp_path / "failplug.py").write_text(FAILING_PLUGIN)
    (tmp_path / "space.yaml").write_text(plugin_space("fails", ["rtn-minmax", "always-fails"]))
    args = ("--model", "digits-cnn", "--tracking-uri", "none", "--storage", "sqlite:///optuna.db", "--no-progress")
    first = run_cli("--plugin", "failplug.py", "search", *args, "--space", "space.yaml", "--seed-from", "none", "--budget", "8",
                    "--study-name", "r", "--n-trials", "8", "--max-retries", "0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    done = Counter(t.state.name for t in study.trials)
    failed = done["FAIL"]
    assert failed > 0 and done["COMPLETE"] + failed == 8  # no retries: each failure counts as a trial
    resumed = run_cli("--plugin", "failplug.py", "search", *args, "--resume", "r", "--n-trials", "10", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{failed} failed for good" in resumed.stderr and "2 more to evaluate" in resumed.stderr, resumed.stderr
    done = Counter(t.state.name for t in optuna.load_study(study_name="r", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials)
    assert done["COMPLETE"] + done["FAIL"] == 10


LOGGED = "import plg_log\nplg_log.order.append(__name__)\nVALUE = {value!r}\n"


@pytest.fixture
def plugs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path holding ``plg_log`` (the order plug-ins ran in); the ``plg_`` modules a test imports are forgotten after."""
    (tmp_path / "plg_log.py").write_text("order = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("AUTOQ_PLUGINS", raising=False)
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith(("plg_", "autoq_plugin_plg_"))]:
        del sys.modules[name]


def test_only_the_plugin_option_is_taken_and_a_value_keeps_its_equal_signs() -> None:
    """--plugin X / --plugin=X are taken (split at the first '='); an option that only starts with --plugin is left."""
    plugins, rest = split_plugins(["--pluginx", "a", "--plugin=run=2/p.py", "search", "--plugin", "m"])
    assert plugins == ["run=2/p.py", "m"]
    assert rest == ["--pluginx", "a", "search"]


def test_entry_points_then_the_environment_then_the_options_each_once(plugs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entry points (by module), then $AUTOQ_PLUGINS (spaces trimmed), then --plugin, in order, each listed and run once."""
    for name in ("plg_ep", "plg_env_a", "plg_env_b", "plg_mod"):
        (plugs / f"{name}.py").write_text(LOGGED.format(value=name))
    info = plugs / "plgdist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plgdist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[autoq.plugins]\nmy-entry = plg_ep\n")
    monkeypatch.setenv("AUTOQ_PLUGINS", "plg_env_a, plg_env_b ,")
    loaded = load_plugins(["plg_mod", "plg_env_a"])
    assert [p for p in loaded if p.startswith("plg_")] == ["plg_ep", "plg_env_a", "plg_env_b", "plg_mod"]
    import plg_log

    assert plg_log.order == ["plg_ep", "plg_env_a", "plg_env_b", "plg_mod"]


def test_an_entry_point_that_fails_is_one_error_naming_it(plugs: Path) -> None:
    """Whatever an entry point's module raises, the error names the entry point and the exception."""
    (plugs / "plg_bad_ep.py").write_text("raise RuntimeError('boom')\n")
    info = plugs / "plgbad-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plgbad\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[autoq.plugins]\nbad = plg_bad_ep\n")
    with pytest.raises(AutoqError, match=r"^the autoq plug-in 'bad' \(plg_bad_ep, an autoq.plugins entry point\) failed to load: "
                                         r"RuntimeError: boom$"):
        load_plugins()


def test_a_module_is_found_in_the_working_folder_when_the_path_lacks_it(plugs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The console script has no '' on sys.path: a module of the working folder is still found, as by python -m."""
    (plugs / "plg_cwd.py").write_text("VALUE = 'cwd'\n")
    monkeypatch.chdir(plugs)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(plugs))])
    assert import_plugin("plg_cwd").VALUE == "cwd"


def test_a_file_then_the_same_module_by_name_runs_once(plugs: Path) -> None:
    """A plug-in given as a file and then by its module name is the module already loaded, not a second run."""
    (plugs / "plg_twice.py").write_text(LOGGED.format(value="twice"))
    load_plugins([str(plugs / "plg_twice.py"), "plg_twice"])
    import plg_log

    assert plg_log.order == ["autoq_plugin_plg_twice"]


def test_a_missing_package_of_a_dotted_name_is_said_not_found(plugs: Path) -> None:
    """'pkg.sub' whose package does not exist is 'cannot find', not a failed import of the plug-in's own code."""
    with pytest.raises(AutoqError, match=r"^cannot find plug-in module 'plg_nosuch\.sub'; give an importable module name"):
        import_plugin("plg_nosuch.sub")


def test_a_missing_file_is_said_by_its_absolute_path_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .py path that does not exist: one sentence naming its absolute path, not wrapped in 'failed to import'."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AutoqError, match=rf"^plug-in file '{tmp_path.resolve() / 'nothere.py'}' does not exist$"):
        import_plugin("nothere.py")


@pytest.mark.parametrize("failure", ["raise RuntimeError('boom')", "raise KeyboardInterrupt"])
def test_a_file_that_failed_to_import_runs_again_once_fixed(plugs: Path, failure: str) -> None:
    """A plug-in file whose import failed (or was interrupted) leaves no module behind: given again, its code runs."""
    path = plugs / "plg_fixme.py"
    path.write_text(failure + "\n")
    with pytest.raises((AutoqError, KeyboardInterrupt)):
        import_plugin(str(path))
    assert "autoq_plugin_plg_fixme" not in sys.modules
    path.write_text("VALUE = 'fixed'\n")
    assert import_plugin(str(path)).VALUE == "fixed"


def test_two_files_of_one_name_in_two_folders_are_two_plugins(plugs: Path) -> None:
    """Only the same file is reused: another folder's file of the same name is imported, not taken for the first."""
    for folder in ("a", "b"):
        (plugs / folder).mkdir()
        (plugs / folder / "plg_same.py").write_text(f"VALUE = {folder!r}\n")
    assert import_plugin(str(plugs / "a" / "plg_same.py")).VALUE == "a"
    assert import_plugin(str(plugs / "b" / "plg_same.py")).VALUE == "b"


def test_no_plugins_is_no_note_and_a_path_is_quoted_for_the_shell(tmp_path: Path) -> None:
    """plugin_note: nothing without plug-ins; a file by its absolute path, quoted as a shell needs it."""
    assert plugin_note([]) == ""
    path = tmp_path / "my plugs" / "p.py"
    assert plugin_note([str(path), "mod"]) == (f"add --plugin '{path.resolve()}' --plugin mod to the autoq commands above "
                                              "(export, search --resume): they use the names it registers")


def test_a_stored_file_plugin_is_matched_by_its_name_wherever_it_moved() -> None:
    """missing_plugins: a file stored by an absolute path is loaded when a file (or module) of its name is; a module by its name."""
    assert missing_plugins(["/old/place/myplug.py", "othermod", "gone"], ["new/myplug.py", "othermod"]) == ["gone"]
    assert missing_plugins(["/old/place/myplug.py"], ["myplug"]) == []
