"""``metrics``: the daemon's Prometheus exposition (SPEC §11). Readers may run it. (The
history, ``events``, lives with the other event records in :mod:`oneiric.cli.ctl_events`.)"""

from __future__ import annotations

import click

from oneiric.cli._ctl import json_option, output, pass_ctl
from oneiric.cli._ctl_base import Ctl, call
from oneiric.cli._ctl_errors import errors


@click.command(
    epilog="""\b
Examples:
  oneiricctl metrics
  oneiricctl metrics | grep oneiric_swaps

\b
The Prometheus text format. For a fleet, set [metrics] textfile = PATH and let
node_exporter's textfile collector read it; docs/operations.md lists the
metrics and example alert rules."""
)
@json_option
@pass_ctl
def metrics(ctl: Ctl) -> None:
    """Print the daemon's metrics in the Prometheus exposition format."""
    with errors(ctl, "metrics"):
        result = call(ctl, "metrics")
    output(ctl, result, str(result.get("text", "")).rstrip("\n"))
