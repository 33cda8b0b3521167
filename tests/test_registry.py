"""Registry: ranking rules, replacement semantics, source replacement, resolve and explain."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oneiric.runtime.registry import (
    Candidate,
    Ranked,
    Registry,
    identity,
    outranks,
    rank_key,
)


def cand(provider: str, **kw: Any) -> Candidate:
    kw.setdefault("domain", "adapter")
    kw.setdefault("key", "cache")
    kw.setdefault("factory", f"pkg.{provider}:Impl")
    kw.setdefault("source", "test")
    return Candidate(provider=provider, **kw)


def providers(ranked: list[Ranked]) -> list[str]:
    return [r.candidate.provider for r in ranked]


# -- rule 3: ranking --------------------------------------------------------------------------


def test_highest_stack_level_wins_over_priority_and_recency() -> None:
    reg = Registry()
    reg.register(cand("low", stack_level=1, priority=0))
    reg.register(cand("prio", stack_level=0, priority=100))
    reg.register(cand("late", stack_level=0, priority=0))
    assert providers(reg.ranked("adapter", "cache")) == ["low", "prio", "late"]
    res = reg.resolve("adapter", "cache")
    assert res.winner is not None
    assert (res.winner.candidate.provider, res.via, res.reason) == (
        "low",
        "ranking",
        "highest stack_level",
    )
    assert res.warnings == ()


def test_priority_breaks_stack_level_tie() -> None:
    reg = Registry()
    reg.register(cand("a", stack_level=2, priority=10))
    reg.register(cand("b", stack_level=2, priority=5))
    reg.register(cand("c", stack_level=2, priority=-1))
    assert providers(reg.ranked("adapter", "cache")) == ["a", "b", "c"]
    assert reg.resolve("adapter", "cache").reason == "highest priority"


def test_latest_registration_breaks_full_tie() -> None:
    reg = Registry()
    for p in ("first", "second", "third"):
        reg.register(cand(p))
    assert providers(reg.ranked("adapter", "cache")) == ["third", "second", "first"]
    res = reg.resolve("adapter", "cache")
    assert res.reason == "latest registration"
    assert res.winner is not None
    assert res.winner.candidate.provider == "third"


def test_only_candidate_and_empty_key() -> None:
    reg = Registry()
    assert reg.resolve("adapter", "cache") == reg.resolve("adapter", "cache")
    empty = reg.resolve("adapter", "cache")
    assert (empty.winner, empty.via, empty.reason) == (None, "none", "no candidates")
    reg.register(cand("solo"))
    res = reg.resolve("adapter", "cache")
    assert res.reason == "only candidate"
    assert res.via == "ranking"


def test_keys_are_separate_and_sorted() -> None:
    reg = Registry()
    reg.register(cand("x", domain="task", key="b"))
    reg.register(cand("y", domain="adapter", key="z"))
    reg.register(cand("z", domain="task", key="a"))
    assert reg.keys() == [("adapter", "z"), ("task", "a"), ("task", "b")]
    assert reg.keys("task") == [("task", "a"), ("task", "b")]
    assert reg.keys("event") == []
    assert providers(reg.ranked("task", "a")) == ["z"]
    assert reg.ranked("task", "nope") == []


def test_seq_is_registry_wide_and_monotonic() -> None:
    reg = Registry()
    reg.register(cand("a", key="k1"))
    reg.register(cand("b", key="k2"))
    reg.register(cand("c", key="k1"))
    seqs = {r.candidate.provider: r.seq for k in ("k1", "k2") for r in reg.ranked("adapter", k)}
    assert seqs == {"a": 1, "b": 2, "c": 3}


def test_rank_key_and_outranks() -> None:
    a = Ranked(cand("a", stack_level=1), 1)
    b = Ranked(cand("b", priority=9), 2)
    assert rank_key(a) == (1, 0, 1)
    assert outranks(a, b)
    assert not outranks(b, a)
    assert not outranks(a, a)


# -- replacement, not duplication -------------------------------------------------------------


def test_reregistering_identical_content_is_a_noop_that_keeps_seq() -> None:
    reg = Registry()
    assert reg.register(cand("a", settings={"n": 1}))
    reg.register(cand("b"))
    assert reg.register(cand("a", settings={"n": 1})) is False
    assert len(reg) == 2
    got = reg.get("adapter", "cache", "a")
    assert got is not None
    assert got.seq == 1
    # "b" stays the latest registration: the no-op did not bump "a"
    assert providers(reg.ranked("adapter", "cache")) == ["b", "a"]


def test_reregistering_changed_content_replaces_with_new_seq() -> None:
    reg = Registry()
    reg.register(cand("a", settings={"n": 1}))
    reg.register(cand("b"))
    assert reg.register(cand("a", settings={"n": 2}))
    assert len(reg) == 2
    ranked = reg.ranked("adapter", "cache")
    assert providers(ranked) == ["a", "b"]
    assert ranked[0].seq == 3
    assert ranked[0].candidate.settings == {"n": 2}


def test_same_provider_from_different_sources_coexists() -> None:
    reg = Registry()
    reg.register(cand("mem", source="a.toml", priority=1))
    reg.register(cand("mem", source="remote:7", priority=5))
    assert len(reg) == 2
    best = reg.get("adapter", "cache", "mem")
    assert best is not None
    assert best.candidate.source == "remote:7"
    assert reg.get("adapter", "cache", "nope") is None
    assert reg.get("adapter", "nokey", "mem") is None


def test_unregister() -> None:
    reg = Registry()
    reg.register(cand("a", source="f"))
    reg.register(cand("b", source="f"))
    assert reg.unregister("adapter", "cache", "a", "f")
    assert not reg.unregister("adapter", "cache", "a", "f")
    assert not reg.unregister("adapter", "cache", "b", "other")
    assert not reg.unregister("adapter", "nokey", "b", "f")
    assert len(reg) == 1
    assert reg.unregister("adapter", "cache", "b", "f")
    assert len(reg) == 0
    assert reg.keys() == []
    assert reg.sources() == set()


def test_identity() -> None:
    assert identity(cand("p", source="s")) == ("adapter", "cache", "p", "s")


def test_extra_fields_are_carried_verbatim() -> None:
    reg = Registry()
    c = cand("t", domain="task", every=30.0, topics=("a.*",), concurrency=2, queue_size=5)
    reg.register(c)
    assert reg.ranked("task", "cache")[0].candidate == c
    # a change in an uninterpreted field is still a change
    assert reg.register(msgspec.structs.replace(c, queue_size=6))


# -- replace_source(s) ------------------------------------------------------------------------


def _seed() -> Registry:
    reg = Registry()
    reg.register(cand("a", key="k1", source="f1"))
    reg.register(cand("b", key="k2", source="f1", priority=3))
    reg.register(cand("c", key="k3", source="f2"))
    reg.register(cand("d", key="k1", source="remote:1"))
    return reg


def test_replace_source_reports_added_removed_modified_not_unchanged() -> None:
    reg = _seed()
    changed = reg.replace_source(
        "f1",
        [
            cand("b", key="k2", source="f1", priority=3),  # unchanged
            cand("a", key="k4", source="f1"),  # added (and k1's "a" removed)
        ],
    )
    assert changed == {("adapter", "k1"), ("adapter", "k4")}
    assert providers(reg.ranked("adapter", "k1")) == ["d"]
    changed = reg.replace_source("f1", [cand("b", key="k2", source="f1", priority=4)])
    assert changed == {("adapter", "k2"), ("adapter", "k4")}
    assert reg.from_source("f1") == reg.ranked("adapter", "k2")
    assert reg.replace_source("f1", [cand("b", key="k2", source="f1", priority=4)]) == set()


def test_replace_source_keeps_seq_of_unchanged_and_is_exact_name() -> None:
    reg = _seed()
    before = reg.get("adapter", "k2", "b")
    reg.register(cand("x", key="k2", source="f1x"))
    reg.replace_source("f1", [cand("b", key="k2", source="f1", priority=3)])
    assert reg.get("adapter", "k2", "b") == before
    # "f1" is not a prefix: "f1x" is untouched
    assert reg.get("adapter", "k2", "x") is not None


def test_replace_sources_handles_vanished_files() -> None:
    reg = _seed()
    changed = reg.replace_sources({"f1", "f2"}, [cand("c", key="k3", source="f2")])
    assert changed == {("adapter", "k1"), ("adapter", "k2")}
    assert reg.sources() == {"f2", "remote:1"}
    assert reg.keys() == [("adapter", "k1"), ("adapter", "k3")]
    assert len(reg) == 2


def test_replace_sources_new_source_and_noop() -> None:
    reg = Registry()
    assert reg.replace_sources(set(), []) == set()
    changed = reg.replace_source("remote:2", [cand("r", source="remote:2")])
    assert changed == {("adapter", "cache")}
    assert reg.replace_sources({"remote:2"}, [cand("r", source="remote:2")]) == set()


def test_replace_sources_rejects_foreign_source_atomically() -> None:
    reg = _seed()
    snapshot = {dk: reg.ranked(*dk) for dk in reg.keys(domain=None)}
    with pytest.raises(ValueError, match="not among the sources"):
        reg.replace_source("f1", [cand("a", key="k9", source="f1"), cand("z", source="f2")])
    assert {dk: reg.ranked(*dk) for dk in reg.keys(domain=None)} == snapshot
    with pytest.raises(TypeError):
        reg.replace_sources("f1", [])


def test_replace_sources_repeat_in_batch_last_wins() -> None:
    reg = Registry()
    reg.replace_source(
        "f",
        [
            cand("a", source="f", priority=1),
            cand("b", source="f"),
            cand("a", source="f", priority=1, settings={"v": 2}),
        ],
    )
    assert len(reg) == 2
    a = reg.get("adapter", "cache", "a")
    assert a is not None
    assert a.candidate.settings == {"v": 2}
    # the repeat is registered last, as a sequence of register() calls would do
    b = reg.get("adapter", "cache", "b")
    assert b is not None
    assert a.seq > b.seq


# -- rules 1 and 2: override and selection ----------------------------------------------------


def _three() -> Registry:
    reg = Registry()
    reg.register(cand("redis", stack_level=2))
    reg.register(cand("memory", priority=10))
    reg.register(cand("sqlite", priority=5))
    return reg


def test_selection_beats_ranking() -> None:
    res = _three().resolve("adapter", "cache", selection="sqlite")
    assert res.winner is not None
    assert (res.winner.candidate.provider, res.via, res.reason) == (
        "sqlite",
        "selection",
        "selected in config",
    )


def test_override_beats_selection() -> None:
    res = _three().resolve("adapter", "cache", override="memory", selection="sqlite")
    assert res.winner is not None
    assert (res.winner.candidate.provider, res.via, res.reason) == (
        "memory",
        "override",
        "operator override",
    )
    assert res.warnings == ()


def test_override_missing_falls_back_to_selection_with_warning() -> None:
    res = _three().resolve("adapter", "cache", override="ghost", selection="sqlite")
    assert res.winner is not None
    assert res.winner.candidate.provider == "sqlite"
    assert res.via == "selection"
    assert res.warnings == (
        "operator override names provider 'ghost' which has no candidate for adapter/cache; "
        "falling back to the config selection 'sqlite'",
    )


def test_both_missing_fall_back_to_ranking_with_two_warnings() -> None:
    res = _three().resolve("adapter", "cache", override="ghost", selection="phantom")
    assert res.winner is not None
    assert res.winner.candidate.provider == "redis"
    assert res.via == "ranking"
    assert [w.split(" names ")[0] for w in res.warnings] == [
        "operator override",
        "config selection",
    ]
    assert all(w.endswith("falling back to the ranking ('redis')") for w in res.warnings)


def test_selection_on_empty_key_warns_and_resolves_nothing() -> None:
    res = Registry().resolve("adapter", "cache", selection="memory")
    assert (res.winner, res.via) == (None, "none")
    assert res.warnings == (
        "config selection names provider 'memory' which has no candidate for adapter/cache; "
        "falling back to nothing: the key has no candidates",
    )


def test_override_picks_best_ranked_candidate_of_that_name() -> None:
    reg = Registry()
    reg.register(cand("mem", source="a.toml", stack_level=0))
    reg.register(cand("mem", source="remote:1", stack_level=1))
    reg.register(cand("other", stack_level=5))
    res = reg.resolve("adapter", "cache", override="mem")
    assert res.winner is not None
    assert res.winner.candidate.source == "remote:1"


# -- explain ----------------------------------------------------------------------------------


def test_explain_ranking_reasons() -> None:
    reg = Registry()
    reg.register(cand("redis", stack_level=2, source="a.toml"))
    reg.register(cand("memory", stack_level=1, priority=10, source="a.toml"))
    reg.register(cand("sqlite", stack_level=1, priority=5, source="a.toml"))
    reg.register(cand("disk", stack_level=1, priority=5, source="b.toml"))
    ex = reg.explain("adapter", "cache", active="redis")
    assert (ex.winner, ex.via, ex.reason, ex.mismatch) == (
        "redis",
        "ranking",
        "highest stack_level",
        None,
    )
    assert [(e.rank, e.provider, e.winner, e.active) for e in ex.candidates] == [
        (1, "redis", True, True),
        (2, "memory", False, False),
        (3, "disk", False, False),
        (4, "sqlite", False, False),
    ]
    reasons = [e.reasons for e in ex.candidates]
    assert reasons[0] == ("stack_level 2 > 1 of 'memory'",)
    assert reasons[1] == (
        "stack_level 1 < 2 of 'redis'",
        "shadowed by 'redis' (highest stack_level)",
    )
    assert reasons[2][0] == "priority 5 < 10 of 'memory' (tie on stack_level 1)"
    assert reasons[3][0] == (
        "registered earlier: seq 3 < 4 of 'disk' (tie on stack_level 1 and priority 5)"
    )
    assert ex.candidates[2].source == "b.toml"
    assert ex.candidates[2].factory == "pkg.disk:Impl"
    assert (ex.candidates[1].priority, ex.candidates[1].stack_level) == (10, 1)


def test_explain_winner_reason_for_priority_and_recency_and_only() -> None:
    reg = Registry()
    reg.register(cand("a", priority=1))
    reg.register(cand("b", priority=2))
    assert reg.explain("adapter", "cache").candidates[0].reasons == (
        "priority 2 > 1 of 'a' (tie on stack_level 0)",
    )
    reg.register(cand("c", priority=2))
    assert reg.explain("adapter", "cache").candidates[0].reasons == (
        "latest registration: seq 3 > 2 of 'b' (tie on stack_level 0 and priority 2)",
    )
    solo = Registry()
    solo.register(cand("s"))
    assert solo.explain("adapter", "cache").candidates[0].reasons == ("only candidate",)


def test_explain_selection_winner_listed_first_and_others_shadowed() -> None:
    ex = _three().explain("adapter", "cache", selection="sqlite")
    assert [e.provider for e in ex.candidates] == ["sqlite", "redis", "memory"]
    assert ex.candidates[0].reasons == (
        "selected in config",
        "takes precedence over the ranking, which puts 'redis' first",
    )
    assert ex.candidates[1].reasons == (
        "first by ranking (stack_level 2, priority 0)",
        "shadowed by 'sqlite' (selected in config)",
    )
    assert ex.candidates[2].reasons == (
        "stack_level 0 < 2 of 'redis'",
        "shadowed by 'sqlite' (selected in config)",
    )
    assert (ex.selection, ex.override, ex.via) == ("sqlite", None, "selection")


def test_explain_override_marks_overridden_selection() -> None:
    ex = _three().explain("adapter", "cache", override="redis", selection="memory")
    assert ex.candidates[0].reasons == ("operator override",)  # also the ranking's first
    memory = next(e for e in ex.candidates if e.provider == "memory")
    assert memory.reasons[-1] == "selected in config, but the operator override wins"
    sqlite = next(e for e in ex.candidates if e.provider == "sqlite")
    assert "selected in config, but the operator override wins" not in sqlite.reasons


def test_explain_same_provider_other_source_is_named_with_source() -> None:
    reg = Registry()
    reg.register(cand("mem", source="a.toml", priority=1))
    reg.register(cand("mem", source="remote:3"))
    reg.register(cand("top", stack_level=1))
    ex = reg.explain("adapter", "cache", selection="mem", active="mem")
    assert [(e.provider, e.source, e.active) for e in ex.candidates] == [
        ("mem", "a.toml", True),
        ("top", "test", False),
        ("mem", "remote:3", False),
    ]
    assert ex.candidates[2].reasons == (
        "priority 0 < 1 of 'mem' from a.toml (tie on stack_level 0)",
        "shadowed by 'mem' from a.toml: the config selection names 'mem' and picks its "
        "best-ranked candidate",
    )
    assert ex.mismatch is None


def test_explain_unnamed_source_label() -> None:
    reg = Registry()
    reg.register(cand("p", source=""))
    reg.register(cand("p", source="x", priority=1))
    ex = reg.explain("adapter", "cache")
    assert ex.candidates[1].reasons[0] == ("priority 0 < 1 of 'p' from x (tie on stack_level 0)")
    assert ex.candidates[0].reasons[0] == (
        "priority 1 > 0 of 'p' from <no source> (tie on stack_level 0)"
    )


def test_explain_empty_key_and_warnings_passthrough() -> None:
    ex = Registry().explain("adapter", "cache", override="x")
    assert ex.candidates == ()
    assert (ex.winner, ex.via, ex.mismatch) == (None, "none", None)
    assert len(ex.warnings) == 1


def test_explain_is_msgspec_encodable() -> None:
    ex = _three().explain("adapter", "cache", active="memory")
    doc = msgspec.json.decode(msgspec.json.encode(ex))
    assert doc["winner"] == "redis"
    assert doc["candidates"][1]["active"] is True


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"active": "redis"}, None),
        (
            {"active": "memory", "parked": "redis", "admin": "paused"},
            "swap to 'redis' is parked: adapter/cache is paused",
        ),
        (
            {"active": "memory", "parked": "sqlite", "admin": "draining"},
            "swap to 'sqlite' is parked: adapter/cache is draining; the winner is now 'redis'",
        ),
        (
            {"active": "memory", "parked": "redis"},
            "swap to 'redis' is parked: adapter/cache is held",
        ),
        (
            {"active": "memory", "last_error": "ConnectionRefusedError: nope"},
            "last swap to 'redis' failed: ConnectionRefusedError: nope; 'memory' is still serving",
        ),
        (
            {"last_error": "boom"},
            "last swap to 'redis' failed: boom; nothing is serving",
        ),
        (
            {"active": "memory", "admin": "drained"},
            "swap to 'redis' waits for resume: adapter/cache is drained; 'memory' is still serving",
        ),
        ({}, "swap to 'redis': activation pending; nothing is serving"),
        (
            {"active": "memory", "admin": "active"},
            "swap to 'redis': activation pending; 'memory' is still serving",
        ),
    ],
)
def test_explain_mismatch_texts(kw: dict[str, str], expected: str | None) -> None:
    assert _three().explain("adapter", "cache", **kw).mismatch == expected


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, None),
        (
            {"active": "old"},
            "'old' is still serving but adapter/cache has no candidate any more: "
            "retirement pending",
        ),
        (
            {"active": "old", "last_error": "stop timed out"},
            "'old' is still serving but adapter/cache has no candidate any more; retiring it "
            "failed: stop timed out",
        ),
        (
            {"active": "old", "admin": "paused"},
            "'old' is still serving but adapter/cache has no candidate any more; retirement "
            "waits for resume: adapter/cache is paused",
        ),
    ],
)
def test_explain_mismatch_without_winner(kw: dict[str, str], expected: str | None) -> None:
    assert Registry().explain("adapter", "cache", **kw).mismatch == expected


def test_explain_active_not_registered_marks_nothing() -> None:
    ex = _three().explain("adapter", "cache", active="gone")
    assert not any(e.active for e in ex.candidates)
    assert ex.mismatch == "swap to 'redis': activation pending; 'gone' is still serving"


# -- properties -------------------------------------------------------------------------------

candidates = st.builds(
    Candidate,
    domain=st.sampled_from(["adapter", "task"]),
    key=st.sampled_from(["a", "b"]),
    provider=st.sampled_from(["p", "q", "r"]),
    factory=st.just("m:f"),
    priority=st.integers(-2, 2),
    stack_level=st.integers(0, 2),
    settings=st.dictionaries(st.just("n"), st.integers(0, 1)),
    source=st.sampled_from(["f1", "f2", "remote:1"]),
)


def _all(reg: Registry) -> list[Ranked]:
    return [r for dk in reg.keys(domain=None) for r in reg.ranked(*dk)]


@given(st.lists(candidates, max_size=25))
def test_prop_ranking_is_strict_total_order(cs: list[Candidate]) -> None:
    reg = Registry()
    for c in cs:
        reg.register(c)
    rs = _all(reg)
    for a, b in itertools.product(rs, repeat=2):
        if a is b:
            assert not outranks(a, b)  # irreflexive
        else:
            assert outranks(a, b) != outranks(b, a)  # total and antisymmetric
    for x, y, z in itertools.product(rs[:8], repeat=3):
        if outranks(x, y) and outranks(y, z):
            assert outranks(x, z)  # transitive


@given(st.lists(candidates, max_size=25))
def test_prop_ranked_sorted_and_resolve_takes_the_first(cs: list[Candidate]) -> None:
    reg = Registry()
    for c in cs:
        reg.register(c)
    for dk in reg.keys(domain=None):
        ranked = reg.ranked(*dk)
        keys = [rank_key(r) for r in ranked]
        assert keys == sorted(keys, reverse=True)
        assert len(set(keys)) == len(keys)
        res = reg.resolve(*dk)
        assert res.winner == ranked[0]
        assert res.via == "ranking"
        ex = reg.explain(*dk)
        assert [e.seq for e in ex.candidates] == [r.seq for r in ranked]


@given(st.lists(candidates, max_size=30))
def test_prop_reregistration_never_duplicates(cs: list[Candidate]) -> None:
    reg = Registry()
    last: dict[tuple[str, str, str, str], Candidate] = {}
    for c in cs:
        reg.register(c)
        last[identity(c)] = c
    rs = _all(reg)
    idents = [identity(r.candidate) for r in rs]
    assert len(idents) == len(set(idents)) == len(reg) == len(last)
    assert {identity(r.candidate): r.candidate for r in rs} == last
    assert len({r.seq for r in rs}) == len(rs)


@settings(max_examples=50)
@given(st.data())
def test_prop_order_stable_under_registration_permutations(data: st.DataObject) -> None:
    # distinct identities, so every item keeps its own seq in either order
    cs = data.draw(st.lists(candidates, max_size=10, unique_by=identity))
    perm = data.draw(st.permutations(cs))
    for order in (cs, perm):
        reg = Registry()
        for c in order:
            reg.register(c)
        for dk in reg.keys(domain=None):
            ranked = reg.ranked(*dk)
            # rule-3 fields decide first; registration order only breaks exact ties
            fields = [(r.candidate.stack_level, r.candidate.priority) for r in ranked]
            assert fields == sorted(fields, reverse=True)
            expect = sorted(
                (c for c in order if (c.domain, c.key) == dk),
                key=lambda c: (c.stack_level, c.priority, order.index(c)),
                reverse=True,
            )
            assert [r.candidate for r in ranked] == expect

    # the multiset of (stack_level, priority) per key does not depend on the order
    def shape(order: list[Candidate]) -> dict[tuple[str, str], list[tuple[int, int]]]:
        reg = Registry()
        for c in order:
            reg.register(c)
        return {
            dk: [(r.candidate.stack_level, r.candidate.priority) for r in reg.ranked(*dk)]
            for dk in reg.keys(domain=None)
        }

    assert shape(cs) == shape(perm)


@given(
    st.lists(candidates, max_size=20),
    st.sets(st.sampled_from(["f1", "f2", "remote:1"])),
    st.lists(candidates, max_size=20),
)
def test_prop_replace_sources_reports_exactly_changed_keys(
    before: list[Candidate], names: set[str], batch: list[Candidate]
) -> None:
    reg = Registry()
    for c in before:
        reg.register(c)
    batch = [c for c in batch if c.source in names]

    def snapshot() -> dict[tuple[str, str], dict[tuple[str, str, str, str], Candidate]]:
        return {
            dk: {identity(r.candidate): r.candidate for r in reg.ranked(*dk)}
            for dk in reg.keys(domain=None)
        }

    old = snapshot()
    changed = reg.replace_sources(names, batch)
    new = snapshot()
    differs = {dk for dk in old.keys() | new.keys() if old.get(dk) != new.get(dk)}
    assert changed == differs
    # the replaced sources now hold exactly the batch (last repeat wins); others are untouched
    expect = {identity(c): c for c in batch}
    got = {identity(r.candidate): r.candidate for r in _all(reg) if r.candidate.source in names}
    assert got == expect
    for dk, members in old.items():
        kept = {i: c for i, c in members.items() if i[3] not in names}
        assert {i: c for i, c in new.get(dk, {}).items() if i[3] not in names} == kept
