"""Operator intent, the admin's durable word (SPEC §4): ``pause``, ``resume``, ``drain`` and the
provider override ``swap``.

``drain`` streams progress events before its reply; Ctrl-C stops this client waiting, never
the drain itself. The bodies of ``pause``, ``resume`` and ``drain`` are
:mod:`oneiric.cli._ctl_hot`'s, shared with the click-free fast path.
"""

from __future__ import annotations

import click

from oneiric.cli import _ctl_hot, render
from oneiric.cli._ctl import DOMAIN, duration_arg, json_option, output, pass_ctl
from oneiric.cli._ctl_base import WAITING_TIMEOUT, Ctl, call
from oneiric.cli._ctl_errors import errors


def _intent_target(verb: str, domain: str | None, key: str | None, everything: bool) -> str:
    """Check that exactly one of DOMAIN or --all was given; name the target."""
    if everything and domain is not None:
        raise click.UsageError(f"{verb} takes DOMAIN [KEY] or --all, not both")
    if not everything and domain is None:
        raise click.UsageError(
            f"{verb} needs a DOMAIN (and optionally a KEY); to {verb} everything use --all"
        )
    return render.target_name(domain, key)


@click.command(
    epilog="""\b
Examples:
  oneiricctl pause adapter cache --note "db migration"
  oneiricctl pause service           every service, including ones added later
  oneiricctl pause --all

\b
In-flight work continues; new leases wait, service loops stop, scheduled runs are
skipped, events are held and config changes are parked until `oneiricctl resume`."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--all", "everything", is_flag=True, help="Pause every domain.")
@click.option("--note", metavar="TEXT", help="Why; recorded with your user, shown in status.")
@json_option
@pass_ctl
def pause(
    ctl: Ctl, domain: str | None, key: str | None, everything: bool, note: str | None
) -> None:
    """Close admission for a KEY, a whole DOMAIN, or everything."""
    target = _intent_target("pause", domain, key, everything)
    _ctl_hot.pause(ctl, domain, key, note, target)


@click.command(
    epilog="""\b
Examples:
  oneiricctl resume adapter cache
  oneiricctl resume --all            lift every pause and drain

\b
Reopens admission, restarts service loops, delivers held events and applies
parked swaps."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--all", "everything", is_flag=True, help="Resume everything.")
@json_option
@pass_ctl
def resume(ctl: Ctl, domain: str | None, key: str | None, everything: bool) -> None:
    """Lift a pause or drain from a KEY, a DOMAIN, or (with --all) everything."""
    target = _intent_target("resume", domain, key, everything)
    _ctl_hot.resume(ctl, domain, key, target)


@click.command(
    epilog="""\b
Examples:
  oneiricctl drain                   everything (what a shutdown does)
  oneiricctl drain service beat --timeout 2m --note "host maintenance"
  oneiricctl drain adapter --no-wait start draining, do not wait

\b
Pauses the target, then waits until no lease is in flight. Exits 1 naming what is
still in flight when --timeout passes; the target stays draining either way."""
)
@click.argument("domain", required=False, type=DOMAIN)
@click.argument("key", required=False)
@click.option("--note", metavar="TEXT", help="Why; recorded with your user, shown in status.")
@click.option(
    "--timeout",
    "drain_timeout",
    callback=duration_arg,
    metavar="SECONDS",
    help="How long the drain may wait for in-flight work before it exits 1 (default: until "
    "drained). Not bounded by the global --timeout/--reply-timeout.",
)
@click.option("--no-wait", is_flag=True, help="Start draining and return at once.")
@json_option
@pass_ctl
def drain(
    ctl: Ctl,
    domain: str | None,
    key: str | None,
    note: str | None,
    drain_timeout: float | None,
    no_wait: bool,
) -> None:
    """Pause, then wait for in-flight work to finish (no argument: everything)."""
    code = _ctl_hot.drain(ctl, domain, key, note, drain_timeout, no_wait)
    if code:
        raise click.exceptions.Exit(code)


@click.command(
    epilog="""\b
Examples:
  oneiricctl swap adapter cache sqlite
  oneiricctl swap adapter cache --clear   back to the config's choice

\b
The override is durable until cleared. The swap is make-before-break: the new
provider starts and passes its health check before it takes new leases; on
failure the old one keeps serving. On a paused key the swap is parked."""
)
@click.argument("domain", type=DOMAIN)
@click.argument("key")
@click.argument("provider", required=False)
@click.option("--clear", is_flag=True, help="Drop the operator override.")
@json_option
@pass_ctl
def swap(ctl: Ctl, domain: str, key: str, provider: str | None, clear: bool) -> None:
    """Override the active PROVIDER of DOMAIN KEY (or --clear the override)."""
    if provider is not None and clear:
        raise click.UsageError("give a PROVIDER or --clear, not both")
    if provider is None and not clear:
        raise click.UsageError("give the PROVIDER to swap to, or --clear to drop the override")
    with errors(ctl, "swap"):
        result = call(
            ctl,
            "swap",
            read_timeout=ctl.read_timeout(WAITING_TIMEOUT),
            domain=domain,
            key=key,
            provider=provider,
            clear=clear,
        )
    output(ctl, result, render.render_swap(result, domain, key, cleared=clear))
