"""What every oneiricctl command shares under click: option parsing (durations, JSON, ``--json``
after the command), ``pass_ctl`` and printing a reply. The click-free part (defaults, the global
options as :class:`Ctl`, durations, the look, requests) is :mod:`oneiric.cli._ctl_base`, which
the fast path for the hot commands runs on alone.

Light all the same: click, json and stdlib modules click loads anyway; no dataclasses, no
pathlib.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from oneiric._const import DOMAINS
from oneiric.cli import render
from oneiric.cli._ctl_base import Ctl, parse_duration

pass_ctl = click.make_pass_decorator(Ctl)


# --- option parsing ----------------------------------------------------------------------------


def duration_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback (rather than a ParamType, which is generic only in newer click): the
    config's duration grammar (:mod:`oneiric._durations`: ``30``, ``500ms``, ``1h30m``, ``7d``)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def reply_timeout_arg(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """A duration that must be more than 0: a reply timeout of 0 could never be met."""
    seconds = duration_arg(ctx, param, value)
    if seconds == 0:
        raise click.BadParameter("must be more than 0", ctx=ctx, param=param)
    return seconds


DOMAIN = click.Choice(DOMAINS)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Decode a ``--payload``/``--data`` JSON option, or fail as a usage error naming where.
    ``NaN``/``Infinity`` are refused: they are not JSON and the request could not carry them."""
    if value is None:
        return None
    try:
        return json.loads(value, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity constant
        raise click.BadParameter(f"not valid JSON: {exc}", ctx=ctx, param=param) from None


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    ctl = ctx.find_object(Ctl)
    if value and ctl is not None:
        ctl.json = True
        render.LOOK.colour = False


F = TypeVar("F", bound=Callable[..., Any])


def _no_headers(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        render.LOOK.headers = False


def json_option(f: F) -> F:
    """``--json`` and ``--no-headers`` accepted after the command too (``oneiricctl status
    --json``, ``oneiricctl status --no-headers``)."""
    f = click.option(
        "--no-headers",
        is_flag=True,
        expose_value=False,
        callback=_no_headers,
        help="Print tables without their header line.",
    )(f)
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        callback=_set_json,
        help="Print one JSON document instead of text.",
    )(f)


# --- printing ----------------------------------------------------------------------------------


def output(ctl: Ctl, result: Any, text: str) -> None:
    """The reply as one JSON document under ``--json``, else the rendered ``text``."""
    click.echo(render.to_json(result) if ctl.json else text)
