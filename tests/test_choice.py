"""LayerChoice names and Assignment (mapping, hashing, JSON)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping

import pytest

from autoq.choice import ASSIGNMENT_VERSION, Assignment, LayerChoice
from autoq.errors import AutoqError
from autoq.quant import QuantSpec
from autoq.quant.activation import ActSpec

INT4 = LayerChoice(QuantSpec(4, "group", 128, symmetric=False), "rtn-mse")
INT8 = LayerChoice(QuantSpec(8, "channel", None, symmetric=True), "rtn-minmax")
FP16 = LayerChoice(QuantSpec.half())


# ---------------------------------------------------------------- LayerChoice


@pytest.mark.parametrize(
    "name",
    ["int4-g128-asym:rtn-mse", "int8-ch-sym:rtn-minmax", "int2-tensor-asym:rtn-mse", "int3-g32-sym:rtn-mse", "fp16"],
)
def test_name_round_trip(name):
    choice = LayerChoice.from_name(name)
    assert choice.name == name
    assert LayerChoice.from_name(choice.name) == choice


def test_from_name_parses_fields():
    choice = LayerChoice.from_name("int4-g128-asym:rtn-mse")
    assert choice == INT4
    assert choice.weight.bits == 4
    assert choice.weight.granularity == "group"
    assert choice.weight.group_size == 128
    assert choice.weight.symmetric is False
    assert choice.method == "rtn-mse"


def test_fp16_from_name():
    choice = LayerChoice.from_name("fp16")
    assert choice.weight.is_half
    assert choice.method == "none"
    assert choice == FP16


@pytest.mark.parametrize(("name", "says"), [
    ("fp16:nonsense+a8-token", r"fp16 keeps the layer in half precision, with no method or activation format; write 'fp16'"),
    ("fp16:gptq", r"fp16 keeps the layer in half precision, with no method"),
    ("int16-ch-sym:gptq", r"'int16-ch-sym' is no integer format: choose int2 to int8 \('int8-ch-sym'\), or 'fp16'"),
])
def test_a_half_precision_choice_with_more_to_it_is_refused(name, says):
    """'fp16:nonsense+a8-token' and 'int16-ch-sym:gptq' ran as fp16, the method and activation dropped without a word."""
    with pytest.raises(AutoqError, match=says):
        LayerChoice.from_name(name)


def test_fp16_normalises_method():
    choice = LayerChoice(QuantSpec.half(), "rtn-mse")
    assert choice.method == "none"
    assert choice == FP16
    assert hash(choice) == hash(FP16)
    assert choice.name == "fp16"
    with_act = LayerChoice(QuantSpec.half(), "rtn-mse", ActSpec.from_name("a8-tensor"))  # one fp16: equal, one hash, one name
    assert with_act.activation is None and with_act == FP16 and hash(with_act) == hash(FP16)


def test_default_method_for_integer_formats():
    assert LayerChoice(QuantSpec(4, "channel")).method == "rtn-mse"


def test_choices_differ_by_method():
    a = LayerChoice(QuantSpec(4, "channel"), "rtn-mse")
    b = LayerChoice(QuantSpec(4, "channel"), "rtn-minmax")
    assert a != b
    assert a.name != b.name


@pytest.mark.parametrize(
    ("name", "match"),
    [("", "cannot parse layer choice ''"), ("int4-g128-asym", "layer choice 'int4-g128-asym'"), ("int4-g128-asym:", "layer choice 'int4-g128-asym:'"),
     (":rtn-mse", "quantization format ''"), ("int9-ch-asym:rtn-mse", "bit-width in 'int9-ch-asym': choose int2"),
     ("int4-g100-asym:rtn-mse", r"group size 100 is not supported; choose one of \(32, 64, 128\)"), ("fp32", "layer choice 'fp32'"),
     ("garbage:rtn-mse", "quantization format 'garbage'"), ("FP16x", "layer choice 'FP16x'"),
     ("int8-ch-sym:rtn-mse+", "cannot parse layer choice 'int8-ch-sym:rtn-mse\\+'")],  # a '+' names an activation format
)
def test_bad_names_raise(name, match):
    """Each error names the part that is wrong and says what would be right."""
    with pytest.raises(AutoqError, match=match) as info:
        LayerChoice.from_name(name)
    assert "expected" in str(info.value) or "choose" in str(info.value)


def test_missing_method_message_shows_example():
    with pytest.raises(AutoqError, match="int4-g128-asym:rtn-mse"):
        LayerChoice.from_name("int4-g128-asym")


# ---------------------------------------------------------------- Assignment


def make() -> Assignment:
    return Assignment.from_dict({"embed.proj": INT4, "block.0": FP16, "block.1": INT8, "head": INT4})


def test_assignment_is_an_ordered_mapping():
    a = make()
    assert isinstance(a, Mapping)
    assert list(a) == ["embed.proj", "block.0", "block.1", "head"]
    assert list(a.keys()) == ["embed.proj", "block.0", "block.1", "head"]
    assert list(a.values()) == [INT4, FP16, INT8, INT4]
    assert len(a) == 4
    assert a["block.1"] == INT8
    assert "head" in a and "tail" not in a
    assert a.get("tail") is None
    assert dict(a) == {"embed.proj": INT4, "block.0": FP16, "block.1": INT8, "head": INT4}


def test_missing_key_raises_key_error():
    with pytest.raises(KeyError):
        make()["nope"]


def test_equal_content_is_equal_and_hashes_equal():
    a, b = make(), make()
    assert a is not b
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    different = Assignment.from_dict({**dict(a), "head": FP16})
    assert different != a
    assert len({a, different}) == 2


def test_assignment_is_immutable():
    a = make()
    with pytest.raises(AttributeError):
        a.items_ = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        a["head"] = FP16  # type: ignore[index]


def test_json_round_trip():
    a = make()
    text = a.to_json()
    data = json.loads(text)
    assert data["format"] == "autoq.assignment"
    assert data["version"] == ASSIGNMENT_VERSION
    assert data["layers"] == {
        "embed.proj": "int4-g128-asym:rtn-mse",
        "block.0": "fp16",
        "block.1": "int8-ch-sym:rtn-minmax",
        "head": "int4-g128-asym:rtn-mse",
    }
    back = Assignment.from_json(text)
    assert back == a
    assert list(back) == list(a)


def test_empty_assignment_round_trip():
    assert Assignment.from_json(Assignment().to_json()) == Assignment()


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2"])
def test_from_json_rejects_invalid_json(text):
    with pytest.raises(AutoqError, match="JSON"):
        Assignment.from_json(text)


@pytest.mark.parametrize(
    "data",
    [[], "autoq.assignment", 3, {"layers": {}}, {"format": "other", "version": 1, "layers": {}}],
)
def test_from_json_rejects_wrong_format(data):
    with pytest.raises(AutoqError, match="autoq.assignment"):
        Assignment.from_json(json.dumps(data))


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_from_json_rejects_wrong_version(version):
    data = {"format": "autoq.assignment", "version": version, "layers": {"a": "fp16"}}
    with pytest.raises(AutoqError, match="version"):
        Assignment.from_json(json.dumps(data))


def test_from_json_rejects_bad_choice_name_and_names_its_layer():
    data = {"format": "autoq.assignment", "version": 1, "layers": {"a": "fp16", "encoder.2.fc": "int4-g128-asym"}}
    with pytest.raises(AutoqError, match="assignment layer 'encoder.2.fc': cannot parse layer choice 'int4-g128-asym'; expected"):
        Assignment.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "data",
    [
        {"format": "autoq.assignment", "version": 1},
        {"format": "autoq.assignment", "version": 1, "layers": ["fp16"]},
        {"format": "autoq.assignment", "version": 1, "layers": {"a": 4}},
    ],
)
def test_from_json_malformed_layers_is_a_user_error(data):
    with pytest.raises(AutoqError, match="'layers' must map layer names to choice names such as 'int4-g128-asym:rtn-mse'"):
        Assignment.from_json(json.dumps(data))


def test_summary_counts_most_common_first():
    assert make().summary() == "int4-g128-asym:rtn-mse x2, fp16 x1, int8-ch-sym:rtn-minmax x1"
    three_fp16 = Assignment.from_dict({"a": INT8, "b": FP16, "c": FP16, "d": FP16})
    assert three_fp16.summary() == "fp16 x3, int8-ch-sym:rtn-minmax x1"
    assert Assignment().summary() == ""


def test_a_look_up_does_not_scan_the_layers():
    """``cost()`` and ``items()`` looked each layer up by a scan: quadratic, 0.6 s a trial at 3,200 layers. Counted, not
    timed: a name compares equal to another at most once per look-up."""
    compared = []

    class Name(str):
        __hash__ = str.__hash__

        def __eq__(self, other):
            compared.append(1)
            return str.__eq__(self, other)

    choice = LayerChoice.from_name("int4-ch-asym:rtn-mse")
    names = [Name(f"layer{i}") for i in range(400)]
    a = Assignment(tuple((n, choice) for n in names))
    assert dict(a.items()) == dict.fromkeys(names, choice)
    assert len(compared) <= 2 * len(names)  # a scan: 80,000
    b = pickle.loads(pickle.dumps(Assignment(tuple((str(n), choice) for n in names))))
    assert b == a and hash(b) == hash(a) and b["layer7"] == choice and "layer400" not in b and [1] not in b


def test_an_assignments_repr_names_each_layers_choice_where_few_and_counts_them_where_many():
    """A 37-layer assignment's dataclass repr was 9 kB, repeated in each point of a result's."""
    few = Assignment.from_dict({"a": LayerChoice.from_name("int4-ch-asym:rtn-mse"), "b": LayerChoice.from_name("fp16")})
    assert repr(few) == "Assignment({'a': 'int4-ch-asym:rtn-mse', 'b': 'fp16'})"
    many = Assignment(tuple((str(i), LayerChoice.from_name("fp16" if i % 3 == 0 else "int4-g128-asym:rtn-mse")) for i in range(37)))
    assert repr(many) == "Assignment(<37 layers: int4-g128-asym:rtn-mse x24, fp16 x13>)"
    eight = Assignment(tuple((f"l{i}", LayerChoice.from_name("fp16")) for i in range(8)))  # up to 8 layers, each named
    assert eval(repr(eight)) == eight and repr(Assignment((*eight.items(), ("l8", FP16)))) == "Assignment(<9 layers: fp16 x9>)"  # noqa: S307


def test_an_assignment_is_built_from_a_mapping_of_names_and_refuses_what_is_not_one():
    """Assignment({'ab': 'fp16'}), as its repr reads, split each layer name into characters ('a' -> 'b'); a choice name
    stayed a string, and repr() then failed on it."""
    made = Assignment({"ab": "fp16", "cd": LayerChoice.from_name("int4-ch-asym:rtn-mse")})
    assert list(made) == ["ab", "cd"] and made["ab"] == LayerChoice.from_name("fp16") and eval(repr(made)) == made  # noqa: S307
    assert Assignment.from_dict({"ab": "fp16"}) == Assignment({"ab": "fp16"})
    with pytest.raises(AutoqError, match=r"an Assignment maps layer names to choices, .*; got list with 'abc'"):
        Assignment(["abc"])
    with pytest.raises(AutoqError, match=r"layer 'ab': a choice is a LayerChoice or its name .*, got int 3"):
        Assignment({"ab": 3})
    with pytest.raises(AutoqError, match=r"assignment layer 'ab': cannot parse layer choice 'int9'"):
        Assignment({"ab": "int9"})


def test_an_assignment_names_each_layer_once():
    """A repeated layer was looked up as its first choice and written to JSON as its last: an export stored layer 0 as
    int4 and its autoq_config.json said fp16."""
    with pytest.raises(AutoqError, match=r"^an Assignment names each layer once; 'a' is given more than once: keep one choice per layer$"):
        Assignment((("a", "int4-ch-asym:rtn-mse"), ("b", "fp16"), ("a", "fp16")))
    with pytest.raises(AutoqError, match=r"; 'a', 'b' are given more than once"):
        Assignment((("a", "fp16"), ("b", "fp16"), ("b", "fp16"), ("a", "fp16"), ("a", "fp16")))
