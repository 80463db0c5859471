"""The digits CNN: trained once, cached, accurate."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from autoq.builtin.digits import RECIPE, digits_workload, train_digits_cnn


def test_trained_once_then_loaded_from_cache():
    first = digits_workload()
    path = Path(os.environ["AUTOQ_CACHE_DIR"]) / f"{RECIPE}.pt"
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    second = digits_workload()
    assert path.stat().st_mtime_ns == stamp  # not retrained
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert first.evaluate(first.model) > 0.95
    assert len(first.calibration) > 0 and first.calibration[0].shape[1:] == (1, 8, 8)


def test_building_it_leaves_the_callers_random_state():
    """Training (same weights for the same seed) and loading from the cache draw nothing from the global torch RNG."""
    x, y = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 10
    state = torch.get_rng_state()
    first, second = train_digits_cnn(x, y, epochs=1), train_digits_cnn(x, y, epochs=1)
    digits_workload()
    digits_workload()  # the second one loads from the cache
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_threads_building_it_at_once_get_the_one_model_a_single_thread_trains(tmp_path, monkeypatch):
    """Two searches of an outer study's threads (n_jobs=2) on a cold cache each trained a model, from the global RNG
    both seeded and put back: two other models, of which one was kept, and the search on the other could not be
    exported (its weights' hash). The second now waits for the first's and reads it."""
    import threading

    from autoq.builtin.digits import digits_data

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path))
    start, built = threading.Barrier(3), {}

    def build(i: int) -> None:
        start.wait()
        built[i] = digits_workload().model.state_dict()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alone = train_digits_cnn(*digits_data()[:2]).state_dict()
    for i in range(3):
        assert all(torch.equal(built[i][k], alone[k]) for k in alone), i


def test_the_recipes_weights_are_those_of_its_seeded_initialization_and_shuffles():
    """The model of recipe digits-cnn-v1, as first written: initialized after torch.manual_seed(seed), its batches shuffled
    by a generator of their own. Its initialization's generator once shuffled the batches too: another model under the
    same recipe name (a cache of the old one held other weights, and a plug-in test's frontier moved)."""
    from torch import nn

    from autoq.builtin.digits import digits_cnn, digits_data

    x, y = (t[:256] for t in digits_data()[:2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        expected = digits_cnn()
    opt, gen = torch.optim.Adam(expected.parameters(), lr=3e-3), torch.Generator().manual_seed(3)
    for _ in range(2):
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(expected(x[idx]), y[idx]).backward()
            opt.step()
    got = train_digits_cnn(x, y, epochs=2, seed=3).state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.state_dict().items())


def test_a_cache_file_cut_short_is_trained_again_and_written_whole(tmp_path, monkeypatch, capsys):
    """A cached CNN cut short (a kill during the save, a full disk) failed every later run with torch's "failed finding
    central directory", naming no file; the save wrote straight to the cached path, so a process starting meanwhile
    could read half of it."""
    good = Path(os.environ["AUTOQ_CACHE_DIR"]) / f"{RECIPE}.pt"
    digits_workload()  # the session's cached CNN
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path))
    path = tmp_path / f"{RECIPE}.pt"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    workload = digits_workload()
    err = capsys.readouterr().err
    assert f"the cached digits-cnn at {path} cannot be read" in err and "training it again" in err
    assert workload.evaluate(workload.model) > 0.95
    assert torch.load(path, weights_only=True).keys() == workload.model.state_dict().keys()  # whole again
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left beside it


def test_a_cache_that_cannot_be_written_trains_and_says_so(tmp_path, monkeypatch):
    """A read-only cache failed every command that loads digits-cnn after training it, with "Read-only file system: PATH"
    naming no setting. Here a folder stands where the file goes, so it cannot be written."""
    from autoq.errors import AutoqWarning

    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path))
    (tmp_path / f"{RECIPE}.pt").mkdir()
    with pytest.warns(AutoqWarning, match=r"the trained digits-cnn could not be kept in the cache \(.*\), so it will be trained again "
                                          r"next time; point AUTOQ_CACHE_DIR at a writable folder"):
        workload = digits_workload()
    assert workload.evaluate(workload.model) > 0.95


def test_loaded_under_the_callers_inference_mode_its_weights_are_ordinary_tensors():
    """Loaded under torch.inference_mode (a search called there), its weights were inference tensors, which no
    sensitivity metric can score (and a cold cache's training failed: 'element 0 of tensors does not require grad')."""
    from autoq.builtin import load_workload

    load_workload("digits-cnn")  # cached
    with torch.inference_mode():
        workload = load_workload("digits-cnn")
    assert not any(p.is_inference() for p in workload.model.parameters())


def test_the_split_is_recipe_v1s_fixed_75_25_one_scaled_to_0_1():
    """digits_data: 1347 training and 450 held-out images in [0, 1], the held-out set always the same (a cached
    digits-cnn-v1 was trained on the other 1347: another split would score it on its own training images)."""
    from autoq.builtin.digits import digits_data

    x_train, y_train, x_test, y_test = digits_data()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert float(x_train.min()) == 0.0 and float(x_train.max()) == 1.0
    assert y_train[:12].tolist() == [6, 5, 5, 7, 9, 9, 8, 4, 6, 8, 6, 0]
    assert y_test[:12].tolist() == [4, 4, 9, 4, 4, 0, 7, 0, 9, 3, 9, 7] and int(y_test.sum()) == 2087


def test_it_calibrates_on_batches_of_128_and_scores_accuracy_as_a_fraction():
    """Calibration is the training set in batches of 128; quality is accuracy in [0, 1] on the 450 held-out digits,
    and the data's fingerprint is the recipe."""
    workload = digits_workload()
    assert [len(b) for b in workload.calibration] == [128] * 10 + [67]
    assert workload.metric == "top-1 accuracy on 450 held-out scikit-learn digits"
    assert workload.data_fingerprint == RECIPE
    assert 0.95 < workload.quality(workload.model) <= 1.0


def test_loaded_without_its_metric_it_says_so_when_scored():
    """digits_workload(with_metric=False) has no metric: scoring with it is an AutoqError, and its metric reads 'not loaded'."""
    from autoq.errors import AutoqError

    workload = digits_workload(with_metric=False)
    assert workload.metric == "not loaded"
    with pytest.raises(AutoqError, match=r"^the digits-cnn workload was loaded without its quality metric"):
        workload.evaluate(workload.model)


def _untrained(monkeypatch) -> None:
    """train_digits_cnn replaced by a fresh, untrained CNN: the cache's handling is under test, not 30 epochs."""
    from autoq.builtin import digits

    monkeypatch.setattr(digits, "train_digits_cnn", lambda x, y: digits.digits_cnn().eval())


def test_a_cold_cache_trains_without_a_note_that_it_cannot_be_read(tmp_path, monkeypatch, capsys):
    """No cached file is no unreadable one: the CNN is trained and kept without a 'cannot be read' note."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path))
    _untrained(monkeypatch)
    digits_workload()
    assert "cannot be read" not in capsys.readouterr().err
    assert (tmp_path / f"{RECIPE}.pt").is_file()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_an_empty_or_foreign_cache_file_is_noted_and_trained_again(content, tmp_path, monkeypatch, capsys):
    """A cached file that is empty or no checkpoint at all (EOFError, UnpicklingError) is noted and trained again, not
    a traceback."""
    monkeypatch.setenv("AUTOQ_CACHE_DIR", str(tmp_path))
    _untrained(monkeypatch)
    (tmp_path / f"{RECIPE}.pt").write_bytes(content)
    digits_workload()
    assert f"the cached digits-cnn at {tmp_path / f'{RECIPE}.pt'} cannot be read" in capsys.readouterr().err
