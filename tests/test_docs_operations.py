"""docs/operations.md against a real daemon: the metric table names every metric a real scrape
has, with its type and labels, and nothing else; the example alert rules use only metrics and
labels that exist."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from demo import REPO, demo_daemon

DOC = (REPO / "docs" / "operations.md").read_text()
METRICS_SRC = (REPO / "src" / "oneiric" / "metrics.py").read_text()

_ROW = re.compile(r"^\| `(oneiric_\w+)` \| (gauge|counter|histogram) \|([^|]*)\|", re.M)
#: only present once there is something to say (a remote manifest applied, a check planned)
_ONCE = re.compile(r"\((once|while) ")


def documented() -> dict[str, tuple[str, frozenset[str], bool]]:
    """name (without _total) -> (type, labels, only-sometimes) from the metric table."""
    out = {}
    for m in _ROW.finditer(DOC):
        name, kind, labels = m.groups()
        line = DOC[m.start() : DOC.index("\n", m.start())]
        base = name.removesuffix("_total") if kind == "counter" else name
        out[base] = (kind, frozenset(re.findall(r"`(\w+)`", labels)), bool(_ONCE.search(line)))
    return out


def alert_rules() -> str:
    section = DOC[DOC.index("### Example alert rules") :]
    return section[
        section.index("```yaml") + 7 : section.index("```", section.index("```yaml") + 7)
    ]


@pytest.fixture(scope="module")
def scrape() -> dict[str, Any]:
    """A real scrape of the demo daemon, after a pause (so the intent gauge has a sample) and
    a request (so the control counter has one)."""
    with demo_daemon() as demo:
        assert demo.ctl("pause", "adapter", "cache", "--note", "for the scrape").returncode == 0
        out = demo.ctl("metrics")
        assert out.returncode == 0, out.stderr
    return {f.name: f for f in text_string_to_metric_families(out.stdout)}


def labels_of(family: Any) -> frozenset[str]:
    return frozenset(k for s in family.samples for k in s.labels if k != "le")


def test_the_metric_table_is_the_real_metric_set(scrape: dict[str, Any]) -> None:
    table = documented()
    assert len(table) >= 20
    assert sorted(set(scrape) - set(table)) == []  # every metric is documented
    for name, (kind, labels, sometimes) in table.items():
        if name not in scrape:
            assert sometimes, f"{name} is documented but not in a real scrape"
            assert f'"{name}"' in METRICS_SRC  # at least the daemon makes it
            continue
        family = scrape[name]
        assert family.type == kind, name
        assert family.samples, name
        assert labels_of(family) == labels, name


def test_the_alert_rules_use_real_metrics_and_labels(scrape: dict[str, Any]) -> None:
    rules = alert_rules()
    exprs = re.findall(r"^\s*expr: (.+)$", rules, re.M)
    assert len(exprs) >= 4  # crash loop, failed swaps, remote stale, paused > 1 h ...
    samples = {s.name: f for f in scrape.values() for s in f.samples}
    table = documented()
    used = set()
    for expr in exprs:
        for name, matchers in re.findall(r"\b(oneiric_\w+)(\{[^}]*\})?", expr):
            used.add(name)
            if name in samples:
                family = samples[name]
                known = labels_of(family)
            else:  # a metric present only sometimes: the documented labels
                base = name.removesuffix("_total")
                assert base in table and table[base][2], f"{name} in {expr!r} does not exist"
                known = table[base][1]
            for label in re.findall(r"(\w+)\s*[=!]~?", matchers):
                assert label in known, f"{name} has no label {label!r} ({expr!r})"
        for label in re.findall(r"by \(([^)]*)\)", expr):
            for one in (x.strip() for x in label.split(",")):
                assert one == "instance" or any(one in labels_of(scrape[n]) for n in scrape)
    for wanted in (
        "oneiric_service_restarts_total",
        "oneiric_failed_swaps_total",
        "oneiric_remote_status",
        "oneiric_intent_since_timestamp_seconds",
    ):
        assert wanted in used
    # the rules' label values are ones the daemon uses
    assert 'status=~"stale|error"' in rules
    assert any(
        s.labels.get("admin") == "paused"
        for s in scrape["oneiric_intent_since_timestamp_seconds"].samples
    )


def test_the_exit_statuses_and_journal_fields_are_documented() -> None:
    for needle in (
        "ONEIRIC_HEALTH_FILE",
        "journalctl -u oneiricd ONEIRIC_KEY=adapter/cache",
        "ONEIRIC_OP",
        "ONEIRIC_UID",
        "oneiricctl events --follow",
        "the config files on disk do not load",
    ):
        assert needle in DOC, needle
