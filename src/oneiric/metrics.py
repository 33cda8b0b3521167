"""Prometheus metrics (SPEC §11): ``oneiricctl metrics`` and the node_exporter textfile.

The daemon keeps plain numbers as it runs — the per-key counters of its status (swaps, failed
swaps, restarts, runs, events), the control requests by op and outcome, and the bucket counts of
swap durations, fed by the history (:mod:`oneiric.runtime.history`). prometheus_client turns
them into the exposition format at scrape time through a custom collector, so nothing is written
twice and the hot paths never touch it. prometheus_client costs ~85 ms to import, so it is
imported on the first scrape, in a worker thread, as the rendering is (the snapshot it renders
is taken on the event loop first: the loop never renders 10,000 components' text).

Metric names are documented in docs/operations.md with example alert rules.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import anyio

from oneiric.control.session import RequestStats
from oneiric.runtime.health import HealthSnapshot
from oneiric.runtime.history import HistoryEntry

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from oneiric.reload import Reloader

__all__ = ["CONTENT_TYPE", "SWAP_BUCKETS", "Metrics", "render", "textfile_loop", "write_textfile"]

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the swap-duration histogram's buckets.
SWAP_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_SWAP_KINDS: Final = {"activate": "ok", "swap": "ok", "rollback": "failed"}


class _Histogram:
    """Cumulative bucket counts and sum of one label set (the counting; the exposition is
    prometheus_client's HistogramMetricFamily)."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(SWAP_BUCKETS) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(SWAP_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip([*map(str, SWAP_BUCKETS), "+Inf"], self.buckets, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class Metrics:
    """What the daemon counts for Prometheus. :meth:`observe` is a history listener."""

    def __init__(self, snapshot: Callable[[], HealthSnapshot], requests: RequestStats) -> None:
        self.snapshot = snapshot
        self.requests = requests
        self.swaps: dict[tuple[str, str], _Histogram] = {}  # (domain, outcome)

    def observe(self, entry: HistoryEntry) -> None:
        outcome = _SWAP_KINDS.get(entry.kind)
        duration = entry.detail.get("duration_ms")
        if outcome is None or entry.key is None or not isinstance(duration, int | float):
            return
        domain = entry.key.partition("/")[0]
        hist = self.swaps.get((domain, outcome))
        if hist is None:
            hist = self.swaps[domain, outcome] = _Histogram()
        hist.observe(duration / 1000)

    def freeze(self) -> _Frozen:
        """Everything a scrape renders, taken on the event loop (cheap copies)."""
        return _Frozen(
            snapshot=self.snapshot(),
            requests=dict(self.requests),
            swaps={k: (h.cumulative(), h.total) for k, h in self.swaps.items()},
        )

    async def render(self) -> str:
        """The exposition text; the rendering (and the first import) run in a worker thread."""
        frozen = self.freeze()
        return await anyio.to_thread.run_sync(render, frozen)

    async def write_textfile(self, path: str) -> None:
        frozen = self.freeze()
        await anyio.to_thread.run_sync(write_textfile, path, frozen)


async def textfile_loop(metrics: Metrics, reloader: Reloader) -> None:
    """With ``[metrics] textfile = PATH``: rewrite the file every ``health_interval`` (both
    read live from the running config, so a reload turns it on, off or elsewhere)."""
    failed_at: str | None = None
    while True:
        config = reloader.config
        path = config.metrics.textfile
        if path is not None:
            try:
                await metrics.write_textfile(path)
                failed_at = None
            except OSError as exc:
                if failed_at != path:  # once per path, not every interval
                    log.warning("cannot write the metrics textfile %s: %s", path, exc)
                    failed_at = path
        await anyio.sleep(config.daemon.health_interval)


class _Frozen:
    __slots__ = ("requests", "snapshot", "swaps")

    def __init__(
        self,
        *,
        snapshot: HealthSnapshot,
        requests: dict[tuple[str, str], int],
        swaps: dict[tuple[str, str], tuple[list[tuple[str, float]], float]],
    ) -> None:
        self.snapshot = snapshot
        self.requests = requests
        self.swaps = swaps


def _registry(frozen: _Frozen) -> CollectorRegistry:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(frozen))
    return registry


def render(frozen: _Frozen) -> str:
    """Blocking: the Prometheus text exposition of ``frozen``."""
    from prometheus_client.exposition import generate_latest

    return generate_latest(_registry(frozen)).decode("utf-8")


def write_textfile(path: str, frozen: _Frozen) -> None:
    """Blocking: write the exposition atomically for node_exporter's textfile collector
    (temporary file in the same directory, then rename; node_exporter never reads half)."""
    from prometheus_client.exposition import write_to_textfile

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_to_textfile(path, _registry(frozen))


class _Collector:
    """Builds every family from a frozen snapshot at scrape time."""

    def __init__(self, frozen: _Frozen) -> None:
        self.frozen = frozen

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = self.frozen.snapshot
        up = GaugeMetricFamily("oneiric_daemon_state", "1 for the daemon's state", labels=["state"])
        up.add_metric([snap.state], 1)
        yield up
        started = GaugeMetricFamily(
            "oneiric_daemon_start_time_seconds", "When the daemon started (epoch seconds)"
        )
        started.add_metric([], snap.started_at)
        yield started
        config_error = GaugeMetricFamily(
            "oneiric_config_error", "1 when the config files on disk do not load"
        )
        config_error.add_metric([], 1 if snap.config.last_error else 0)
        yield config_error

        states: dict[tuple[str, str, str], int] = {}
        in_flight = GaugeMetricFamily(
            "oneiric_in_flight_leases", "Leases in flight", labels=["domain", "key"]
        )
        intent_since = GaugeMetricFamily(
            "oneiric_intent_since_timestamp_seconds",
            "When the operator intent holding a key (paused, draining, drained) was set",
            labels=["domain", "key", "admin"],
        )
        counters = {
            name: CounterMetricFamily(f"oneiric_{name}", text, labels=labels)
            for name, text, labels in (
                ("swaps", "Provider swaps that completed", ["domain", "key"]),
                (
                    "failed_swaps",
                    "Swaps rolled back (the previous provider kept serving)",
                    ["domain", "key"],
                ),
                ("service_restarts", "Service run() restarts after a crash", ["key"]),
                ("task_runs", "Task and workflow runs started", ["domain", "key"]),
                ("task_failed_runs", "Task and workflow runs that failed", ["domain", "key"]),
                (
                    "task_skipped_runs",
                    "Scheduled runs skipped (previous still running)",
                    ["domain", "key"],
                ),
                ("events", "Events by what became of them", ["key", "result"]),
            )
        }
        held = GaugeMetricFamily(
            "oneiric_events_held", "Events held while the key is paused", labels=["key"]
        )
        for c in snap.components:
            group = (c.domain, c.admin, c.lifecycle)
            states[group] = states.get(group, 0) + 1
            dk = [c.domain, c.key]
            in_flight.add_metric(dk, c.in_flight)
            if c.admin != "active" and c.intent_at is not None:
                intent_since.add_metric([*dk, c.admin], c.intent_at)
            counters["swaps"].add_metric(dk, c.swaps)
            counters["failed_swaps"].add_metric(dk, c.failed_swaps)
            if c.domain == "service":
                counters["service_restarts"].add_metric([c.key], c.restarts)
            elif c.domain in ("task", "workflow"):
                counters["task_runs"].add_metric(dk, c.runs)
                counters["task_failed_runs"].add_metric(dk, c.failed_runs)
                counters["task_skipped_runs"].add_metric(dk, c.skipped_runs)
            elif c.domain == "event":
                counters["events"].add_metric([c.key, "delivered"], c.delivered)
                counters["events"].add_metric([c.key, "failed"], c.failed_deliveries)
                counters["events"].add_metric([c.key, "dropped"], c.dropped_events)
                held.add_metric([c.key], c.held_events)
        components = GaugeMetricFamily(
            "oneiric_components",
            "Components by domain, operator intent (admin) and lifecycle",
            labels=["domain", "admin", "lifecycle"],
        )
        for labels, count in sorted(states.items()):
            components.add_metric(list(labels), count)
        yield components
        yield in_flight
        yield intent_since
        yield from counters.values()
        yield held

        durations = HistogramMetricFamily(
            "oneiric_swap_duration_seconds",
            "Activation time of swaps (import, construct, start, health gate)",
            labels=["domain", "outcome"],
        )
        for (domain, outcome), (buckets, total) in sorted(self.frozen.swaps.items()):
            durations.add_metric([domain, outcome], buckets, total)
        yield durations

        remote = snap.remote
        remote_status = GaugeMetricFamily(
            "oneiric_remote_status", "1 for the remote manifest's status", labels=["status"]
        )
        remote_status.add_metric([remote.status], 1)
        yield remote_status
        for name, text, value in (
            (
                "oneiric_remote_applied_version",
                "Targets version of the applied remote manifest",
                remote.version,
            ),
            (
                "oneiric_remote_applied_timestamp_seconds",
                "When the remote manifest was applied",
                remote.applied_at,
            ),
            (
                "oneiric_remote_last_check_timestamp_seconds",
                "Last remote check",
                remote.last_check_at,
            ),
            (
                "oneiric_remote_next_check_timestamp_seconds",
                "Next remote check",
                remote.next_check_at,
            ),
        ):
            if value is not None:
                gauge = GaugeMetricFamily(name, text)
                gauge.add_metric([], value)
                yield gauge
        for name, text, value in (
            ("oneiric_remote_failures", "Consecutive failed remote checks", remote.failures),
            (
                "oneiric_remote_restart_needed",
                "1 when an artifact change needs a restart",
                int(remote.restart_needed),
            ),
            ("oneiric_remote_components", "Remote candidates applied", remote.components),
        ):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], value)
            yield gauge

        requests = CounterMetricFamily(
            "oneiric_control_requests",
            "Control requests answered, by op and outcome (ok or the error code)",
            labels=["op", "outcome"],
        )
        for (op, outcome), count in sorted(self.frozen.requests.items()):
            requests.add_metric([op, outcome], count)
        yield requests
        scraped = GaugeMetricFamily(
            "oneiric_metrics_generated_timestamp_seconds", "When these metrics were generated"
        )
        scraped.add_metric([], time.time())
        yield scraped
