"""The registry the five plug-in kinds share (`autoq.registry.Registry`)."""

from __future__ import annotations

import pytest

from autoq.errors import AutoqError
from autoq.registry import Registry


def test_names_are_checked_where_the_decorator_is_written_and_taken_once():
    reg: Registry[int] = Registry("widget", reserved=("none",))
    with pytest.raises(ValueError, match="cannot register widget 'a b'"):
        reg.decorator("a b", len)  # before any function is given
    for name in ("_x", "-x", ".x", ""):  # starting with a letter or a digit
        with pytest.raises(ValueError, match=f"cannot register widget '{name}': a name is letters, digits"):
            reg.add(name, 0)
    Registry("widget").add("0.x_y-z", 0)  # a digit first, then the separators a name may hold
    with pytest.raises(ValueError, match="cannot register widget 'none': the name is reserved"):
        reg.add("none", 1)
    reg.decorator("abc", lambda fn: fn())(lambda: 3)
    with pytest.raises(ValueError, match="widget 'abc' is already registered"):
        reg.add("abc", 4)
    assert reg.get("abc") == 3 and reg.names() == ["abc"] and len(reg) == 1


def test_an_unknown_name_lists_the_known_ones_in_registration_order():
    reg: Registry[str] = Registry("strategy", asked_as="--strategy", hint=" (or a plug-in's)")
    for name in ("zeta", "alpha"):
        reg.add(name, name.upper())
    with pytest.raises(AutoqError, match=r"unknown --strategy 'beta'; choose one of zeta, alpha \(or a plug-in's\)"):
        reg.get("beta")
    with pytest.raises(AutoqError, match="unknown --strategy 3"):
        reg.get(3)
    with pytest.raises(AutoqError, match=r"unknown --strategy \['zeta'\]"):  # unhashable: the same error, no TypeError
        reg.get(["zeta"])
    assert reg.find("beta") is None and "zeta" in reg and 3 not in reg and ["zeta"] not in reg
    with pytest.raises(AutoqError, match=r"^unknown widget 'x'; choose one of $"):  # asked as its kind, by default
        Registry("widget").get("x")


def test_a_copy_is_registered_into_alone_and_adopt_keeps_what_is_known():
    reg: Registry[int] = Registry("method")
    reg.add("a", 1)
    other = reg.copy()
    other.add("b", 2)
    other.adopt("a", 10)
    other.adopt("c", 3)
    assert reg.names() == ["a"] and other.entries() == (1, 2, 3)


def test_check_callable_refuses_what_autoq_cannot_call_as_it_will():
    from autoq.registry import check_callable

    check_callable("sampler", "ok", lambda seed, extra=1: None, ("seed",))
    check_callable("sampler", "any", lambda *args, **kw: None, ("seed",))
    check_callable("sampler", "builtin", max, ("seed",))  # no signature to read (inspect raises ValueError): on trust
    with pytest.raises(ValueError, match=r"^sampler 'n': 42 is not callable; register a function called as n\(seed\)$"):
        check_callable("sampler", "n", 42, ("seed",))
    with pytest.raises(ValueError, match=r"^PTQ method 'one': autoq calls it as one\(weight, spec, stats\), which its signature \(w\) refuses"):
        check_callable("PTQ method", "one", lambda w: w, ("weight", "spec", "stats"))
    with pytest.raises(ValueError, match=r"strategy 'kw': .*\(\*, ctx\) refuses"):
        check_callable("strategy", "kw", lambda *, ctx: ctx, ("ctx",))
