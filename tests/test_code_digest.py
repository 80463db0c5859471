"""``code_digest`` changes with what a plug-in computes (its closure, constants, own helpers, an object's attributes)
and is the same in every process: the sensitivity cache and a search's recorded methods are keyed by it."""

from __future__ import annotations

import importlib.util
import linecache
import subprocess
import sys
import textwrap

import torch
from helpers import printed_under_hash_seeds

from autoq.code_digest import code_digest

PLUGIN = '''
CLIP = {clip}


def _helper(w):
    return w * {scale}


def make(frac):
    def method(weight, spec, stats=None):
        return _helper(weight.clamp(-frac * CLIP, frac * CLIP))
    return method


class Clipper:
    def __init__(self, frac):
        self.frac = frac

    def __call__(self, weight, spec, stats=None):
        return weight.clamp(-self.frac, self.frac)


def direct(weight, spec, stats=None):
    return _helper(weight) * CLIP


def nested(weight, spec, stats=None):
    clip = lambda w: w.clamp(-CLIP, CLIP)  # noqa: E731 - CLIP read only inside the lambda
    return clip(weight)
'''


def _module(tmp_path, name: str, clip: float = 0.9, scale: float = 1.0):
    return _imported(tmp_path / f"{name}.py", PLUGIN.format(clip=clip, scale=scale))


def _imported(path, text: str):
    """``text`` written to ``path`` and imported as the module of the file's name."""
    linecache.clearcache()  # a rewrite within the same second and size would read the old source (a new process would not)
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_closure_value_a_constant_a_helper_and_an_attribute_change_the_digest(tmp_path):
    """Edited from 0.9 to 0.2, a plug-in's closure argument or module constant reused the old cached table."""
    base = _module(tmp_path, "p_base")
    same = _module(tmp_path, "p_same")  # another copy of the same text: the digest names the module, so compare in one
    assert code_digest(base.make(0.9)) == code_digest(base.make(0.9))
    assert code_digest(base.make(0.9)) != code_digest(base.make(0.2))
    assert code_digest(base.Clipper(0.9)) == code_digest(base.Clipper(0.9)) != code_digest(base.Clipper(0.2))
    assert code_digest(same.direct) == code_digest(same.direct)
    for changed in (dict(clip=0.2), dict(scale=2.0)):
        before = code_digest(base.direct)
        edited = _module(tmp_path, "p_base", **changed)  # the same file and name, edited
        assert code_digest(edited.direct) != before, changed
        base = _module(tmp_path, "p_base")  # back to the first text
        assert code_digest(base.direct) == before
    before = code_digest(base.nested)  # a global that only a nested function (a lambda) reads
    assert code_digest(_module(tmp_path, "p_base", clip=0.2).nested) != before


def test_a_plugin_file_digests_as_its_module_does_and_keeps_its_old_digest(tmp_path):
    """``--plugin path/p.py`` imports the file as ``autoq_plugin_p``, ``--plugin p`` as ``p``: the digest named the module,
    so one unedited plug-in, loaded one way by a search and the other by its export, read as "edited since". The old
    digest of the file's module (what a search stored before) is still given, under ``legacy``."""
    by_name = _module(tmp_path, "pform")
    by_file = _module(tmp_path, "autoq_plugin_pform")  # the same text under the name a plug-in file gets
    assert code_digest(by_name.direct) == code_digest(by_file.direct)
    assert code_digest(by_name.make(0.9)) == code_digest(by_file.make(0.9))  # its own-module helper named alike too
    assert code_digest(by_file.direct, legacy=True) != code_digest(by_file.direct)  # what an older autoq stored
    assert code_digest(by_name.direct, legacy=True) == code_digest(by_name.direct)  # a module's own name never changed


def test_tensors_are_hashed_by_their_values():
    def make(t):
        return lambda w, spec, stats=None: w * t

    a = torch.ones(3, dtype=torch.bfloat16)
    assert code_digest(make(a)) == code_digest(make(a.clone())) != code_digest(make(a * 2))


def test_the_digest_is_the_same_in_another_process(tmp_path):
    """A Ray worker and the next command must find the driver's digest: no memory address may enter it."""
    (tmp_path / "pstable.py").write_text(PLUGIN.format(clip=0.5, scale=3.0))
    script = textwrap.dedent("""
        import pstable
        from autoq.code_digest import code_digest
        print(code_digest(pstable.make(0.5)), code_digest(pstable.Clipper(0.5)), code_digest(pstable.direct))
    """)
    runs = [subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0].split()) == 3


def test_a_tensor_a_module_holds_changes_the_digest(tmp_path):
    """A module-level tensor a plug-in multiplies by (not in a dict, not in a closure) is the plug-in's data too."""
    digests = [code_digest(_imported(tmp_path / "ptensor.py", f"import torch\nSCALE = torch.full((3,), {value})\n\n\n"
                                                            "def method(weight, spec, stats=None):\n    return weight * SCALE\n").method)
               for value in (0.9, 0.2)]
    assert digests[0] != digests[1]


def test_a_dtype_constant_changes_the_digest():
    def make(dtype):
        return lambda w, spec, stats=None: w.to(dtype)

    assert code_digest(make(torch.float16)) == code_digest(make(torch.float16)) != code_digest(make(torch.bfloat16))


CONFIGURED = '''
import dataclasses
import types

import torch

CLIP = {clip}
NAMESPACE = types.SimpleNamespace(clip={clip})


@dataclasses.dataclass
class Config:
    clip: float


CONFIG = Config({clip})
TABLE = {{"scale": torch.full((2,), {clip})}}


class Helper:
    @staticmethod
    def clip(w):
        return w.clamp(-{clip}, {clip})


def by_default(weight, spec, stats=None, clip=CLIP):
    return weight.clamp(-clip, clip)


def by_keyword_default(weight, spec, stats=None, *, clip=CLIP):
    return weight.clamp(-clip, clip)


def by_namespace(weight, spec, stats=None):
    return weight.clamp(-NAMESPACE.clip, NAMESPACE.clip)


def by_config(weight, spec, stats=None):
    return weight.clamp(-CONFIG.clip, CONFIG.clip)


def by_class(weight, spec, stats=None):
    return Helper.clip(weight)


def _third(w):
    return w * TABLE["scale"][0]


def _second(w):
    return _third(w)


def _first(w):
    return _second(w)


def by_deep_helper(weight, spec, stats=None):
    return _first(weight)
'''


def test_defaults_config_objects_helper_classes_and_deep_helpers_change_the_digest(tmp_path, monkeypatch):
    """Each of these was left out: an export of a search after the edit shipped a model other than the one scored
    (a default clip=CLIP edited from 0.9 to 0.3: 0.9867 scored, 0.8356 exported)."""
    def load(clip):
        linecache.clearcache()
        path = tmp_path / "pconf.py"
        path.write_text(CONFIGURED.format(clip=clip))
        spec = importlib.util.spec_from_file_location("pconf", path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "pconf", module)  # as a plug-in is: inspect finds a class's source through it
        spec.loader.exec_module(module)
        return module

    names = ("by_default", "by_keyword_default", "by_namespace", "by_config", "by_class", "by_deep_helper")
    before = {name: code_digest(getattr(load(0.9), name)) for name in names}
    assert before == {name: code_digest(getattr(load(0.9), name)) for name in names}
    after = {name: code_digest(getattr(load(0.3), name)) for name in names}
    assert [name for name in names if after[name] == before[name]] == []


def test_a_partial_or_a_wrapper_of_an_autoq_method_is_a_plugins_code(monkeypatch):
    """functools.partial(awq, grid=10) was taken for autoq's own awq: no digest, and an edit of grid went unseen."""
    import functools

    from autoq.ptq import registry
    from autoq.ptq.awq import awq

    base = registry._METHODS.copy()
    monkeypatch.setattr(registry, "_METHODS", base.copy())
    registry.register_method("awq-g10", needs_stats=True, scales_input=True)(functools.partial(awq, grid=10))

    @functools.wraps(awq)
    def wrapped(weight, spec, stats=None):
        return awq(weight, spec, stats)

    registry.register_method("awq-wrapped", needs_stats=True, scales_input=True)(wrapped)
    recorded = registry.plugin_code(["awq-g10", "awq-wrapped", "awq"])
    assert sorted(recorded) == ["awq-g10", "awq-wrapped"]  # awq itself changes only with autoq
    monkeypatch.setattr(registry, "_METHODS", base.copy())  # the plug-in edited, in the next process
    registry.register_method("awq-g10", needs_stats=True, scales_input=True)(functools.partial(awq, grid=40))
    assert registry.changed_code(recorded, ["awq-g10"]) == ["awq-g10"]


def test_tensors_numpy_cannot_take_are_hashed_not_a_crash():
    """A float8 lookup table in a plug-in's config crashed the search ('unsupported ScalarType Float8_e5m2'); a meta or
    sparse tensor too."""
    def make(table):
        return lambda w, spec, stats=None, lut=table: w * 1

    lut = torch.tensor([0.5, 1.0]).to(torch.float8_e5m2)
    assert code_digest(make({"lut": {"a": lut}})) == code_digest(make({"lut": {"a": lut.clone()}}))
    assert code_digest(make({"lut": {"a": lut}})) != code_digest(make({"lut": {"a": (lut.float() * 2).to(torch.float8_e5m2)}}))
    assert code_digest(make(torch.zeros(2, device="meta"))) != code_digest(make(torch.zeros(3, device="meta")))
    sparse = torch.eye(3).to_sparse()
    assert code_digest(make(sparse)) == code_digest(make(torch.eye(3).to_sparse())) != code_digest(make((2 * torch.eye(3)).to_sparse()))


def test_a_function_without_source_has_the_same_digest_under_any_string_hash_seed():
    """Read from its bytecode (a class typed on stdin, in exec or a notebook), ``x in {"relu", "elu"}`` is a frozenset
    constant whose repr follows the hash seed: a model with such a class got a new sensitivity cache key every run."""
    script = textwrap.dedent('''
        from autoq.code_digest import code_digest
        scope = {}
        exec("def act(x):\\n    return x in {'relu', 'leaky', 'elu', 'gelu', 'silu', 'tanh'}\\n", scope)
        print(code_digest(scope["act"]))
    ''')
    digests = printed_under_hash_seeds(script)
    assert len(digests) == 1 and len(next(iter(digests))) == 16, digests


def test_a_set_a_module_holds_has_the_same_digest_under_any_string_hash_seed(tmp_path):
    """A plug-in file reading a module-level set (its iteration order follows the hash seed) digests alike every run."""
    (tmp_path / "psets.py").write_text("NAMES = {'relu', 'gelu', 'silu', 'tanh', 'elu', 'leaky'}\n\n\n"
                                       "def method(weight, spec, stats=None):\n    return weight if 'relu' in NAMES else -weight\n")
    script = "import psets; from autoq.code_digest import code_digest; print(code_digest(psets.method))"
    digests = printed_under_hash_seeds(script, cwd=tmp_path)
    assert len(digests) == 1 and len(next(iter(digests))) == 16, digests


def test_a_class_without_source_is_digested_by_its_methods_code():
    """A callable plug-in class typed in a notebook (no file to read): an edit of its ``__call__`` is another digest."""
    def made(scale: float) -> object:
        scope = {"__name__": "notebook"}
        exec(f"class Clip:\n    def __call__(self, weight, spec, stats=None):\n        return weight * {scale}\n", scope)  # noqa: S102
        return scope["Clip"]()

    assert code_digest(made(1.0)) == code_digest(made(1.0)) != code_digest(made(2.0))


CHAIN = "".join(f"def h{i}(w):\n    return h{i + 1}(w) + {{v{i}}}\n\n\n" for i in range(1, 7)) + \
    "def h7(w):\n    return w\n\n\ndef method(weight, spec, stats=None):\n    return h1(weight)\n"


def test_helpers_are_followed_exactly_depth_calls_deep(tmp_path):
    """An edit of the helper 5 calls below the method changes the digest; one 6 calls below (past _DEPTH) is named only."""
    def digest(**edits: int) -> str:
        values = {f"v{i}": 1 for i in range(1, 7)} | edits
        return code_digest(_imported(tmp_path / "pchain.py", CHAIN.format(**values)).method)

    base = digest()
    assert digest(v5=2) != base and digest(v6=2) == base


def test_values_nested_deeper_than_depth_are_cut():
    """A closure's list nested past _DEPTH levels is cut to its type name; a shallow one is read."""
    def make(x: int):
        nested = [[[[[[x]]]]]]
        return lambda w, spec, stats=None: w * len(nested)

    assert code_digest(make(1)) == code_digest(make(2))
    assert code_digest(lambda w, spec, stats=None, n=[[[1]]]: w) != code_digest(lambda w, spec, stats=None, n=[[[2]]]: w)


def test_functions_and_classes_of_other_modules_are_not_followed(tmp_path, monkeypatch):
    """A helper function or class a plug-in imports from another module is not part of its digest (its own module's are)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = "from pother import helper, Helper\n\n\ndef method(weight, spec, stats=None):\n    return helper(weight) + Helper.k\n"
    digests = []
    for value in (1, 2):
        _imported(tmp_path / "pother.py", f"def helper(w):\n    return w * {value}\n\n\nclass Helper:\n    k = {value}\n")
        monkeypatch.delitem(sys.modules, "pother", raising=False)
        digests.append(code_digest(_imported(tmp_path / "pmain.py", plugin).method))
    assert digests[0] == digests[1]


def test_a_bfloat16_tensor_digests_as_its_float32_values():
    """A bfloat16 tensor is hashed as float32, as it always was: a stored digest keeps its value."""
    bf = torch.tensor([0.5, 1.0, 3.0], dtype=torch.bfloat16)
    fp32 = bf.float()
    assert code_digest(lambda w, spec, stats=None, t=bf: w * t) == code_digest(lambda w, spec, stats=None, t=fp32: w * t)


def test_an_objects_digest_does_not_depend_on_the_order_its_attributes_were_set(tmp_path):
    """Two configs with equal attributes, set in another order, have one digest."""
    a, b = _module(tmp_path, "porder").Clipper(0.5), _module(tmp_path, "porder").Clipper(0.5)
    a.x, a.y = 1, 2
    b.y, b.x = 2, 1
    assert code_digest(a) == code_digest(b)


def test_helpers_that_call_each_other_are_read_once_each(tmp_path, monkeypatch):
    """A web of helpers calling one another is described once each, never around a cycle (12 such helpers
    would be described some 12**5 times)."""
    import inspect

    names = [f"g{i}" for i in range(4)]
    body = " + ".join(f"{n}(w - 1)" for n in names)
    module = _imported(tmp_path / "pweb.py", "".join(f"def {n}(w):\n    return 0 if w <= 0 else {body}\n\n\n" for n in names)
                       + "def method(weight, spec, stats=None):\n    return g0(weight)\n")
    read, getsource = [], inspect.getsource
    monkeypatch.setattr(inspect, "getsource", lambda obj: read.append(getattr(obj, "__name__", "")) or getsource(obj))
    code_digest(module.method)
    assert sorted(read) == sorted(["method", *names])
