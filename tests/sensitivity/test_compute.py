"""The on-disk cache of sensitivity tables: hits, misses, and what never comes from it."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import mlp, space_for

from autoq.builtin.workload import Workload
from autoq.choice import LayerChoice
from autoq.engine.seeding import seed_table
from autoq.errors import AutoqError, AutoqWarning
from autoq.evaluate import QuantCache
from autoq.model import find_layers
from autoq.model.capture import CalibrationStats
from autoq.sensitivity import SensitivityTable, cache_path, compute_table, model_hash, workload_table


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "sensitivity"


def batches(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 6, generator=gen) for _ in range(2)]


def mark(path) -> None:
    """Tamper with a cached table so that a hit is recognisable."""
    data = json.loads(path.read_text())
    data["seconds"] = 12345.0
    path.write_text(json.dumps(data))


def test_cache_hit_and_misses(cache):
    model, data = mlp(), batches()
    space = space_for(model)

    def run(m=model, d=data, settings=None, options=space.options):
        return compute_table(m, d, space.layers, options, "kl", settings, progress=False)

    first = run()
    files = list(cache.glob("kl-*.json"))
    assert len(files) == 1 and not first.from_cache
    mark(files[0])
    hit = run()
    assert hit.seconds == 12345.0 and hit.from_cache  # hit: identical model, data, metric, settings and options
    # said by the table itself: the CLI guessed it from the time taken, and called a cache hit "computed" on a busy machine
    assert "from_cache" not in files[0].read_text() and not SensitivityTable.load(files[0]).from_cache
    fresh = compute_table(model, data, space.layers, space.options, "kl", progress=False, refresh=True)
    assert fresh.seconds != 12345.0 and not fresh.from_cache and run().seconds != 12345.0  # refresh: computed, and cached in its place
    assert run(settings={"n_samples": 8}).seconds != 12345.0  # other settings
    assert run(d=batches(seed=2)).seconds != 12345.0  # other data
    assert run(options=[opts[:3] for opts in space.options]).seconds != 12345.0  # other options
    changed = mlp()
    with torch.no_grad():
        changed[0].weight[0, 0] += 1e-3
    assert model_hash(changed) != model_hash(model)
    assert run(m=changed).seconds != 12345.0  # other weights
    other_activation = mlp()
    other_activation[1] = torch.nn.Sigmoid()  # the same weights (and state dict) in another architecture
    assert model_hash(other_activation) == model_hash(model)
    assert run(m=other_activation).seconds != 12345.0
    assert len(list(cache.glob("kl-*.json"))) == 6
    assert first.entries == run().entries


def test_a_plain_value_beside_the_tensors_is_part_of_the_data_and_an_iterable_of_batches_is_read(cache):
    """A keyword input's number (temperature=0.05) was left out of the data's hash: a table of other data came from the
    cache, 110x off. A DataLoader or generator of batches, which a search takes, failed on batches[0]."""
    from autoq.fingerprints import data_fingerprint

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = mlp()

        def forward(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
            return self.body(x) / temperature

    model, data = Scaled(), batches()
    space = space_for(model)
    warm, cold = ([{"x": x, "temperature": t} for x in data] for t in (1.0, 0.05))
    assert data_fingerprint(warm) != data_fingerprint(cold)
    tables = [compute_table(model, d, space.layers, space.options, "kl", progress=False) for d in (warm, cold)]
    assert tables[0].entries != tables[1].entries and len(list(cache.glob("kl-*.json"))) == 2
    streamed = compute_table(model, (b for b in warm), space.layers, space.options, "kl", progress=False, use_cache=False)
    assert streamed.entries == tables[0].entries


def test_tables_with_a_custom_loss_or_use_cache_false_are_not_cached(cache):
    model = mlp()
    space = space_for(model)
    data = [(x, torch.zeros(len(x), dtype=torch.long)) for x in batches()]
    compute_table(model, data, space.layers, space.options, "hessian", {"max_iter": 3}, loss=lambda out, b: torch.nn.functional.cross_entropy(out, b[1]), progress=False)
    compute_table(model, batches(), space.layers, space.options, "kl", use_cache=False, progress=False)
    assert not cache.exists() or not list(cache.iterdir())


def test_workload_tables_use_the_workload_fingerprint_and_name(cache):
    model = mlp()
    space = space_for(model)
    workload = Workload("tiny-mlp", model, batches(), lambda m: 1.0, "none", data_fingerprint="fp-1", source="tiny-mlp")
    table = workload_table(workload, space.layers, space.options, "sqnr", progress=False)
    assert (table.model_name, table.data_fingerprint, table.model_hash) == ("tiny-mlp", "fp-1", model_hash(model))
    assert cache_path("sqnr", "x").parent == cache


def test_a_callers_own_module_has_one_cached_table_with_a_storage_without_and_from_compute_table(cache, tmp_path):
    """The search's fingerprint of a caller's module (made only with a storage) keyed the cache: the same model and
    batches had one table from a search with a storage and another without or from compute_table, computed again."""
    import autoq

    model = mlp()
    space = space_for(model)
    data = batches() * 2  # the search holds the last one out: it calibrates on the first three
    compute_table(model, data[:3], space.layers, space.options, "sqnr", progress=False)
    (made,) = cache.glob("sqnr-*.json")
    mark(made)
    for storage in (f"sqlite:///{tmp_path / 'optuna.db'}", None):
        autoq.search(model, data, budget="12bits", n_trials=2, seed_from="sqnr", storage=storage, tracking_uri=None, progress=False)
        assert list(cache.glob("sqnr-*.json")) == [made] and json.loads(made.read_text())["seconds"] == 12345.0  # read, not made


def test_a_workload_fingerprint_does_not_hide_other_batching_or_sequential_statistics(cache):
    """A built-in's fingerprint names its data recipe (digits-cnn's is constant whatever its batch_size), and a shared
    cache with sequential statistics quantizes GPTQ and the like otherwise than a fresh table does."""
    model = mlp()
    space = space_for(model)
    rows = torch.cat(batches())

    def run(data, weights=None):
        workload = Workload("tiny-mlp", model, data, lambda m: 1.0, "none", data_fingerprint="recipe", source="tiny-mlp")
        return workload_table(workload, space.layers, space.options, "mse", progress=False, weights=weights)

    run(list(rows.split(8)))
    mark(next(cache.glob("mse-*.json")))
    assert run(list(rows.split(8))).seconds == 12345.0  # the same recipe, batched the same: a hit
    assert run(list(rows.split(4))).seconds != 12345.0  # the same rows batched otherwise: computed again
    assert len(list(cache.glob("mse-*.json"))) == 2
    layers, options = data_driven_options(model)
    sequential = QuantCache(model, CalibrationStats(model, layers, batches(), sequential=True))
    compute_table(model, batches(), layers, options, "mse", progress=False, weights=sequential)
    assert len(list(cache.glob("mse-*.json"))) == 2  # neither read nor written
    before = set(cache.glob("mse-*.json"))
    compute_table(model, batches(), layers, options, "mse", progress=False, weights=QuantCache(model, CalibrationStats(model, layers, batches())))
    assert len(list(cache.glob("mse-*.json"))) == 3  # plain statistics give what a fresh table gives: cached
    (plain,) = set(cache.glob("mse-*.json")) - before
    mark(plain)
    # statistics of other batches, or sampled otherwise (smoothquant-search reads the samples; a layer's rows are sampled
    # with its place in the list: a search's cache lists every layer, a table those its space holds), are not in the key:
    # such a table is neither read (it was, as the plain one) nor written
    for stats in (CalibrationStats(model, layers, batches(seed=5)), CalibrationStats(model, layers, batches(), max_samples=16),
                  CalibrationStats(model, layers[::-1], batches())):
        table = compute_table(model, batches(), layers, options, "mse", progress=False, weights=QuantCache(model, stats))
        assert table.seconds != 12345.0 and len(list(cache.glob("mse-*.json"))) == 3


def test_a_table_file_from_another_model_is_refused_by_the_search(cache, tmp_path):
    model, other = mlp(seed=0), mlp(seed=1)
    space = space_for(model)
    table = compute_table(other, batches(), space.layers, space.options, "kl", model_name="other-mlp", progress=False)
    path = table.save(tmp_path / "other.json")
    workload = Workload("tiny-mlp", model, batches(), lambda m: 1.0, "none")
    with pytest.raises(AutoqError, match=r"computed for model \w+ \(other-mlp\), not for this model \w+ \(tiny-mlp\)"):
        seed_table(workload, space, str(path), progress=False)
    own = compute_table(model, batches(), space.layers, space.options, "kl", progress=False).save(tmp_path / "own.csv")
    assert seed_table(workload, space, str(own), progress=False).model_hash == model_hash(model)


def data_driven_options(model):
    """Every layer's options: RTN, then GPTQ, AWQ and bias correction, which need the layer's calibration statistics."""
    names = ("int3-ch-asym:rtn-mse", "int3-ch-asym:gptq", "int4-g128-asym:awq", "int3-ch-asym:bias-correction")
    layers = find_layers(model)
    return layers, [[LayerChoice.from_name(n) for n in names] for _ in layers]


@pytest.mark.parametrize("metric", ["kl", "sqnr", "mse", "hessian", "fisher"])
def test_data_driven_options_are_scored_with_the_searchs_weights(cache, metric):
    """A table over GPTQ/AWQ/... options quantizes them with statistics from its own batches, as the search's
    cache does (they failed for want of statistics): the same weights, so the same scores as with that cache."""
    model, data = mlp(), batches()
    layers, options = data_driven_options(model)
    settings = {"max_iter": 3, "min_iter": 2} if metric == "hessian" else None
    own = compute_table(model, data, layers, options, metric, settings, use_cache=False, progress=False)
    shared = QuantCache(model, CalibrationStats(model, layers, data))
    searchs = compute_table(model, data, layers, options, metric, settings, use_cache=False, progress=False, weights=shared)
    assert own.entries == searchs.entries and len(own.entries) == 4 * len(layers)
    gptq = {e.layer: e.score for e in own.entries if e.option.endswith(":gptq")}
    rtn = {e.layer: e.score for e in own.entries if e.option.endswith(":rtn-mse")}
    assert gptq != rtn  # GPTQ's own weights were scored, not RTN's


def test_statistics_sampled_with_another_seed_neither_read_nor_write_the_cache(cache):
    """A table scored with a search's statistics of another seed is not the one its cache key names (seed 0's)."""
    model, data = mlp(), batches()
    layers, options = data_driven_options(model)
    compute_table(model, data, layers, options, "mse", progress=False)
    (path,) = cache.glob("mse-*.json")
    mark(path)
    seeded = QuantCache(model, CalibrationStats(model, layers, data, seed=3))
    table = compute_table(model, data, layers, options, "mse", progress=False, weights=seeded)
    assert table.seconds != 12345.0 and not table.from_cache and SensitivityTable.load(path).seconds == 12345.0


def test_statistics_come_from_the_inputs_of_labelled_batches_in_eval_mode(cache):
    """With a task loss the batches are (inputs, labels): the statistics see the inputs. A model in training mode
    (dropout) is captured in eval mode, so its table is that of the same model in eval mode."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.5), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    data = [(x, torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(i))) for i, x in enumerate(batches())]
    layers, options = data_driven_options(model)

    def table(m):
        return compute_table(m, data, layers, options, "sqnr", use_cache=False, progress=False,
                             loss=lambda out, b: torch.nn.functional.cross_entropy(out, b[1]))

    training = table(model.train())
    assert model.training  # left as it was
    assert training.entries == table(model.eval()).entries


def test_a_table_cached_under_an_older_scoring_is_not_read(cache, monkeypatch):
    import autoq.sensitivity.compute as compute

    model, data = mlp(), batches()
    space = space_for(model)
    compute_table(model, data, space.layers, space.options, "sqnr", progress=False)
    mark(next(cache.glob("sqnr-*.json")))
    assert compute_table(model, data, space.layers, space.options, "sqnr", progress=False).seconds == 12345.0
    monkeypatch.setattr(compute, "SCORING_VERSION", compute.SCORING_VERSION + 1)
    assert compute_table(model, data, space.layers, space.options, "sqnr", progress=False).seconds != 12345.0


def test_data_driven_options_do_not_need_statistics_of_a_first_layer_that_takes_none(cache):
    """A plain torch transformer's first quantizable module is an attention's out_proj, whose input cannot be captured:
    the space gives it data-free options only, and the other layers' GPTQ options are still scored."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False).eval()
    layers = find_layers(model)
    assert layers[0].no_rows and not layers[1].no_rows
    options = [[LayerChoice.from_name(n) for n in (("int4-ch-asym:rtn-mse",) if info.no_rows else ("int4-ch-asym:rtn-mse", "int4-ch-asym:gptq"))]
               for info in layers]
    table = compute_table(model, [torch.randn(4, 6, 16, generator=torch.Generator().manual_seed(1))], layers, options, "mse",
                          use_cache=False, progress=False)
    assert len(table.entries) == 5 and table.score("layers.0.linear1", "int4-ch-asym:gptq") > 0


def test_a_damaged_cached_table_is_computed_again(cache):
    """A table cut short (a copy, a disk full) is a miss, not an error that blocks its key until --refresh; a table
    is written whole or not at all (no temporary file stays behind)."""
    model, data = mlp(), batches()
    space = space_for(model)
    first = compute_table(model, data, space.layers, space.options, "sqnr", progress=False)
    (path,) = cache.glob("sqnr-*.json")
    path.write_text(path.read_text()[:100])
    again = compute_table(model, data, space.layers, space.options, "sqnr", progress=False)
    assert again.entries == first.entries and not again.from_cache
    assert SensitivityTable.load(path).entries == first.entries  # written over
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_calibration_batches_without_rows_are_a_clear_error():
    """They divided by zero while picking the rows to score on."""
    from autoq.sensitivity.inputs import subsample

    with pytest.raises(AutoqError, match="calibration batch\\(es\\) hold no rows"):
        subsample([torch.zeros(0, 6), torch.zeros(0, 6)], 128, 32)
    with pytest.raises(AutoqError, match="at least one calibration batch"):
        subsample([], 128, 32)


@pytest.mark.parametrize("metric", ["fisher", "mse"])
def test_examples_without_a_batch_dimension_are_a_clear_error(cache, metric):
    """nn.Linear takes a (64,) input, so the search ran; the metrics cut its features into rows and the model raised
    'mat1 and mat2 shapes cannot be multiplied (1x21 and 64x48)'."""
    from autoq.sensitivity.inputs import subsample

    model = mlp()
    space = space_for(model)
    n_in = model[0].in_features
    with pytest.raises(AutoqError, match=r"a calibration batch holds only 1-D tensors \(shapes \[\(\d+,\)\]\); .*x.unsqueeze\(0\)"):
        compute_table(model, [torch.randn(n_in) for _ in range(4)], space.layers, space.options, metric, progress=False)
    with pytest.raises(AutoqError, match="only 1-D tensors"):
        subsample([{"x": torch.randn(n_in)}], 8, 4)
    labelled = (torch.randn(4, n_in), torch.arange(4))  # 1-D labels beside 2-D inputs are examples along dimension 0
    assert [tuple(t.shape) for t in subsample([labelled], 2)[0]] == [(2, n_in), (2,)]


@pytest.mark.parametrize("metric", ["fisher", "kl"])
def test_labelled_batches_without_a_loss_are_a_clear_error(cache, metric):
    """(inputs, labels) batches without loss= raised TypeError: forward() takes 2 positional arguments but 3 were given,
    from deep in the metric; a search says what to pass."""
    model = mlp()
    space = space_for(model)
    pairs = [(x, torch.zeros(len(x), dtype=torch.long)) for x in batches()]
    with pytest.raises(AutoqError, match=r"the model fails on calibration batch 0 of 2 \(TypeError: .*\(inputs, labels\) pairs: pass the "
                                         r"inputs alone"):
        compute_table(model, pairs, space.layers, space.options, metric, use_cache=False, progress=False)


def test_a_model_that_caches_a_tensor_at_its_first_call_is_scored_by_the_gradient_metrics(cache):
    """The first-batch check ran under inference_mode: a table the model built then (rotary embeddings did) was an
    inference tensor, which fisher's backward could not save."""

    class Cached(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.table = mlp(), None

        def forward(self, x):
            h = self.inner[0](x)
            if self.table is None:
                self.table = torch.linspace(0.5, 1.5, h.shape[-1])
            return self.inner[1:](h * self.table)  # saved for the backward through the first layer

    model = Cached().eval()
    space = space_for(model)
    table = compute_table(model, batches(), space.layers, space.options, "fisher", use_cache=False, progress=False)
    assert any(e.score > 0 for e in table.entries)


def test_fewer_rows_asked_for_than_there_are_batches_take_that_many_spread_over_them():
    """A row from every batch: 256 one-row batches gave 256 rows where n_samples asked for 32 (a DataLoader of small
    batches from Python; hessian's 40 iterations each went over all of them)."""
    from autoq.sensitivity.inputs import subsample

    batches = [torch.full((1, 3), float(i)) for i in range(256)]
    picked = subsample(batches, 32)
    assert len(picked) == 32 and sum(b.shape[0] for b in picked) == 32
    firsts = [int(b[0, 0]) for b in picked]
    assert firsts == sorted(firsts) and firsts[0] < 8 and firsts[-1] >= 248  # one in every 8, from first to last
    uneven = [torch.zeros(n, 3) for n in (5, 1, 30, 2, 64)]
    assert sum(b.shape[0] for b in subsample(uneven, 20)) == 20
    assert sum(b.shape[0] for b in subsample(uneven, 20, 8)) == 20 and max(b.shape[0] for b in subsample(uneven, 20, 8)) <= 8
    assert [b.shape[0] for b in subsample(uneven, None)] == [5, 1, 30, 2, 64]


def test_a_cache_that_cannot_be_written_is_said_and_the_table_still_returned(cache):
    """A read-only or otherwise unwritable cache failed the command after the whole metric ran, the table lost (and a
    search seeded by default ran unseeded). Here the cache's sensitivity folder is a file, so it cannot be made."""
    model, data = mlp(), batches()
    space = space_for(model)
    cache.parent.mkdir(parents=True)
    cache.write_text("not a folder")
    with pytest.warns(AutoqWarning, match=r"the kl sensitivity table could not be kept in the cache \(.*\), so it will be computed "
                                          r"again next time; point AUTOQ_CACHE_DIR at a writable folder"):
        table = compute_table(model, data, space.layers, space.options, "kl", progress=False)
    assert table.metric == "kl" and len(table.entries) == sum(len(o) for o in space.options)
    assert cache.read_text() == "not a folder"


def test_a_search_says_whether_its_seed_table_was_computed_or_read_from_the_cache(cache, capsys):
    """The seeding line said "(cached after the first run)" on every run, the ones that read the cache too."""
    model = mlp()
    space = space_for(model)
    workload = Workload("tiny-mlp", model, batches(), lambda m: 1.0, "none", data_fingerprint="fp-1", source="tiny-mlp")
    first = seed_table(workload, space, "sqnr", progress=True)
    said = capsys.readouterr().err
    assert f"autoq: sqnr sensitivity for {len(space.layers)} layers (kept in the cache for the next run) ..." in said
    assert "read from the cache" not in said
    again = seed_table(workload, space, "sqnr", progress=True)
    said = capsys.readouterr().err
    assert f"autoq: sqnr sensitivity for {len(space.layers)} layers: read from the cache" in said
    assert "kept in the cache" not in said and "autoq sensitivity sqnr" not in said  # no bar: nothing is computed
    assert again.entries == first.entries
    seed_table(workload, space, "sqnr", progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("data_made", ["outside", "inside"])
def test_gradient_metrics_run_under_the_callers_inference_mode(cache, data_made):
    """A search called under torch.inference_mode lost its default fisher seeding ('the model's output does not require
    grad'; batches made there: 'Inference tensors cannot be saved for backward'), and fell back to random mixes."""
    model = mlp()
    space = space_for(model)
    plain = compute_table(model, batches(), space.layers, space.options, "fisher", use_cache=False, progress=False)
    if data_made == "inside":
        with torch.inference_mode():
            data = [(b,) for b in batches()]  # a tuple of positional inputs: its tensors too
    else:
        data = [(b,) for b in batches()]
    assert data[0][0].is_inference() is (data_made == "inside")
    with torch.inference_mode():
        table = compute_table(model, data, space.layers, space.options, "fisher", use_cache=False, progress=False)
    assert table.entries == plain.entries


def test_a_model_built_under_inference_mode_is_told_to_be_built_outside_it(cache):
    """Its weights are inference tensors: kl failed with 'Inference tensors do not track version counter', fisher's seeding
    fell back to random mixes on a RuntimeError."""
    with torch.inference_mode():
        built = mlp()
    partly = mlp()
    with torch.inference_mode():
        partly[4].bias = torch.nn.Parameter(torch.zeros(4))  # one inference tensor is as much as all of them
    space = space_for(built)
    for model, metric in ((built, "kl"), (built, "fisher"), (partly, "kl")):
        with pytest.raises(AutoqError, match="the model's weights are inference tensors .* build or load it outside torch.inference_mode"):
            compute_table(model, batches(), space.layers, space.options, metric, use_cache=False, progress=False)


@pytest.mark.parametrize("metric", ["kl", "sqnr", "mse", "fisher", "hessian"])
def test_namedtuple_batches_score_as_plain_tuples(cache, metric):
    """A namedtuple of positional inputs was rebuilt from a generator (its first field held the generator): every metric
    refused the batch as holding no tensor, or the model was called with the generator."""
    import collections

    Batch = collections.namedtuple("Batch", "x")
    model = mlp()
    space = space_for(model)
    settings = {"max_iter": 3} if metric == "hessian" else None
    plain = compute_table(model, [(b,) for b in batches()], space.layers, space.options, metric, settings, use_cache=False, progress=False)
    named = compute_table(model, [Batch(b) for b in batches()], space.layers, space.options, metric, settings, use_cache=False,
                          progress=False)
    assert named.entries == plain.entries
