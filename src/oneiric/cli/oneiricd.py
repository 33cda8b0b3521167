"""``oneiricd``: the daemon's command line (SPEC §6)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import anyio
import click

from oneiric._const import EXIT_ALREADY_RUNNING, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, VERSION
from oneiric.cli._detach import detach, lock_pidfile
from oneiric.config import check_factories
from oneiric.control.listen import probe_live
from oneiric.daemon import Daemon, Options
from oneiric.errors import AlreadyRunning, StartupError
from oneiric.logging_setup import configure_logging

EPILOG = """\b
Examples:
  oneiricd                                  # foreground, systemd Type=notify
  oneiricd --config ./oneiricd.toml --socket /tmp/o.sock --state-dir /tmp/o
  oneiricd --check                          # validate config and factories; exit 0 or 78
  oneiricd --daemonize --pidfile /run/oneiricd.pid   # init systems without notify support

\b
Exit status: 0 clean stop, 1 runtime failure, 75 another daemon answers on the socket,
78 configuration error.
"""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    metavar="PATH",
    help="Config file [default: $ONEIRIC_CONFIG or /etc/oneiric/oneiricd.toml].",
)
@click.option(
    "--socket",
    "socket_path",
    metavar="PATH",
    help="Control socket [default: $RUNTIME_DIRECTORY/oneiricd.sock].",
)
@click.option(
    "--state-dir",
    metavar="DIR",
    help="Durable state (operator intent) [default: $STATE_DIRECTORY].",
)
@click.option(
    "--health-file",
    metavar="PATH",
    help="Health snapshot file [default: $RUNTIME_DIRECTORY/health.json].",
)
@click.option(
    "--log-level",
    default=None,
    metavar="LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Overrides [daemon] log_level.",
)
@click.option("--check", is_flag=True, help="Validate the config and factories, then exit.")
@click.option(
    "--daemonize",
    is_flag=True,
    help="Detach (python-daemon). Never under systemd; needs --pidfile.",
)
@click.option("--pidfile", metavar="PATH", help="Locked pidfile for --daemonize.")
@click.option(
    "--logfile",
    metavar="PATH",
    help="With --daemonize: append stdout/stderr here (default: keep them).",
)
@click.version_option(VERSION, prog_name="oneiricd")
def cli(
    config: str | None,
    socket_path: str | None,
    state_dir: str | None,
    health_file: str | None,
    log_level: str | None,
    check: bool,
    daemonize: bool,
    pidfile: str | None,
    logfile: str | None,
) -> None:
    """Run the oneiric host daemon in the foreground."""
    daemon = Daemon(
        Options(config=config, socket=socket_path, state_dir=state_dir, health_file=health_file),
        own_process=True,
    )
    try:
        cfg = daemon.load()
    except StartupError as exc:
        click.echo(f"oneiricd: {exc}", err=True)
        sys.exit(exc.exit_status)
    if check:
        for warning in cfg.warnings:
            click.echo(f"oneiricd: warning: {warning}", err=True)
        problems = check_factories(cfg)
        if cfg.remote is not None:
            from oneiric.remote.check import check_remote

            problems += check_remote(cfg.remote)
        for p in problems:
            click.echo(f"oneiricd: {p}", err=True)
        if problems:
            sys.exit(EXIT_CONFIG)
        for broken in daemon.plugins.errors:  # skipped at run time too, never fatal
            click.echo(f"oneiricd: warning: {broken}; it will be skipped", err=True)
        plugins = len(daemon.plugins.loaded)
        click.echo(
            f"{cfg.path}: OK ({len(cfg.components)} components, {len(cfg.files)} file(s)"
            + (f", {plugins} entry-point plugin(s)" if plugins else "")
            + ")"
        )
        sys.exit(EXIT_OK)
    if daemonize and not pidfile:
        raise click.UsageError("--daemonize needs --pidfile PATH")
    configure_logging(log_level or cfg.daemon.log_level)
    # whatever umask we were started with, nothing the daemon (or a component) creates is
    # writable by others unless it sets a mode on purpose (systemd's unit sets 0077 anyway)
    os.umask(os.umask(0o022) | 0o022)
    if daemonize:
        assert pidfile is not None
        _refuse_if_running(daemon)
        lock_fd = lock_pidfile(pidfile)
        out = open(logfile, "a", buffering=1) if logfile else sys.stderr  # noqa: SIM115
        detached = detach(pidfile, lock_fd, out)
        try:
            status = _run(daemon, on_ready=detached.ready)
            detached.failed(status)  # no-op once READY was reported
        finally:
            detached.remove_pidfile()
        sys.exit(status)
    sys.exit(_run(daemon))


def _run(daemon: Daemon, on_ready: Callable[[], None] | None = None) -> int:
    """Run the daemon; its exit status. Non-zero when component calls had to be abandoned at
    stop; threads that still run then (a component's own, or abandoned calls) cannot be
    joined, so the process ends with ``os._exit`` after naming them."""
    status = _run_loop(daemon, on_ready)
    if daemon.abandoned and status == EXIT_OK:
        status = EXIT_FAILED
    return _exit_past_threads(status, daemon.abandoned)


def _run_loop(daemon: Daemon, on_ready: Callable[[], None] | None) -> int:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            if on_ready is not None:
                on_ready()

    try:
        anyio.run(main)
    except StartupError as exc:
        logging.getLogger("oneiricd").error("%s", exc)
        return exc.exit_status
    except BaseExceptionGroup as group:  # raised inside a task group during start-up
        match, _rest = group.split(StartupError)
        if match is None:
            raise
        first = match.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, StartupError)
        logging.getLogger("oneiricd").error("%s", first)
        return first.exit_status
    except KeyboardInterrupt:  # pragma: no cover - the signal receiver handles SIGINT
        return EXIT_FAILED
    return EXIT_OK


#: After the loop ended, how long threads get to finish (idle worker threads exit at once).
THREAD_GRACE = 0.5


def _exit_past_threads(status: int, abandoned: list[str]) -> int:
    """Return ``status``, or — when non-daemon threads still run, which the interpreter would
    wait for forever — log them and ``os._exit`` (never a hang after a clean shutdown)."""
    deadline = time.monotonic() + THREAD_GRACE
    stuck = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon or not thread.is_alive():
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            stuck.append(thread.name)
    log = logging.getLogger("oneiricd")
    if not stuck:
        _stopped(log, status)
        return status
    log.error(
        "exiting with %d thread(s) still running, which cannot be stopped: %s%s",
        len(stuck),
        ", ".join(sorted(stuck)),
        f" (abandoned component calls: {', '.join(abandoned)})" if abandoned else "",
    )
    _stopped(log, status or EXIT_FAILED)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or EXIT_FAILED)


def _stopped(log: logging.Logger, status: int) -> None:
    """The last line of every run, so a log read later says how it ended (and that it did)."""
    log.log(
        logging.INFO if status == EXIT_OK else logging.WARNING, "oneiricd stopped (exit %d)", status
    )


def _refuse_if_running(daemon: Daemon) -> None:
    """Before detaching, so the exit status reaches the caller: 75 when a live daemon answers
    on the socket (the detached child would find the same and could only log it)."""
    assert daemon.paths is not None
    try:
        probe_live(daemon.paths.socket)
    except AlreadyRunning as exc:
        click.echo(f"oneiricd: {exc}", err=True)
        sys.exit(EXIT_ALREADY_RUNNING)


def main() -> None:
    cli(prog_name="oneiricd")


if __name__ == "__main__":
    main()
