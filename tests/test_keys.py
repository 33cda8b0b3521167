"""ComponentKey: the runtime's name for a (domain, key)."""

from __future__ import annotations

from oneiric.runtime.keys import ComponentKey


def test_str_and_format_give_domain_slash_key() -> None:
    ck = ComponentKey("adapter", "cache")
    assert str(ck) == "adapter/cache"
    assert f"no component {ck}" == "no component adapter/cache"
    assert ck.domain == "adapter" and ck.key == "cache"


def test_equals_and_hashes_like_the_plain_pair() -> None:
    """The lease path looks states up with a plain (domain, key) tuple; it must find them."""
    ck = ComponentKey("adapter", "cache")
    assert ck == ("adapter", "cache") and hash(ck) == hash(("adapter", "cache"))
    states = {ck: "state"}
    assert states.get(("adapter", "cache")) == "state"
    d, k = ck
    assert (d, k) == ("adapter", "cache")


def test_orders_by_domain_then_key() -> None:
    keys = [
        ComponentKey("service", "a"),
        ComponentKey("adapter", "z"),
        ComponentKey("adapter", "b"),
    ]
    assert [str(k) for k in sorted(keys)] == ["adapter/b", "adapter/z", "service/a"]
