"""Importing component factories from their ``package.module:attr`` specs.

The loader only checks a factory's *syntax* (loading or reloading a config must never run
component code); these helpers do the actual import: ``resolve_factory`` for the runtime,
``check_factories`` for ``oneiricd --check``, which reports every unimportable factory
instead of stopping at the first.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

from oneiric.config.schema import Config, _describe
from oneiric.errors import ComponentExit


def split_factory(spec: str) -> tuple[str, str]:
    """``package.module:attr`` -> (module, attr); ValueError when malformed."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f'expected "package.module:attr", got {spec!r}')
    return module_name, attr


def import_factory_module(module_name: str) -> ModuleType:
    """``importlib.import_module``, with ``sys.exit()`` (or ``KeyboardInterrupt``) raised by the
    module's code turned into :class:`ComponentExit`: a broken module, not a daemon stop."""
    try:
        return importlib.import_module(module_name)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise ComponentExit.from_exit(exc, f"importing {module_name!r}") from exc


def factory_of(module: ModuleType, spec: str, attr: str) -> Callable[..., Any]:
    """The callable ``attr`` (may be dotted) of an imported ``module``; AttributeError or
    TypeError (not callable)."""
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{spec!r} is a {type(obj).__name__}, not a class or callable")
    return cast(Callable[..., Any], obj)


def resolve_factory(spec: str) -> Callable[..., Any]:
    """Import ``package.module:attr`` (attr may be dotted) and return the callable, blocking
    (``oneiricd --check``; the daemon imports through :mod:`oneiric.runtime.imports`, off its
    event loop).

    Raises ValueError (malformed spec), ImportError, AttributeError, TypeError (not callable),
    ComponentExit (the module called ``sys.exit()``) or whatever else it raises importing."""
    module_name, attr = split_factory(spec)
    return factory_of(import_factory_module(module_name), spec, attr)


def _import_within(module_name: str, timeout: float, hung: set[str]) -> ModuleType:
    """Import ``module_name`` in a daemon thread, waiting at most ``timeout`` seconds: a module
    that hangs at import must not hang ``oneiricd --check`` (the daemon itself imports off its
    loop, :mod:`oneiric.runtime.imports`). ``hung`` collects the modules that did not finish,
    so a second factory of one is reported at once (its import lock is still held)."""
    module = sys.modules.get(module_name)
    if module is not None and not getattr(module.__spec__, "_initializing", False):
        return module
    if module_name in hung:
        raise TimeoutError(f"importing module {module_name!r} did not finish (see above)")
    outcome: list[ModuleType | BaseException] = []

    def run() -> None:
        try:
            outcome.append(import_factory_module(module_name))
        except BaseException as exc:  # handed to the caller below
            outcome.append(exc)

    thread = threading.Thread(target=run, name=f"oneiric import {module_name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        hung.add(module_name)
        raise TimeoutError(
            f"importing module {module_name!r} did not finish within {timeout:g}s "
            "(activation_timeout): it blocks or is slow at import"
        )
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def check_factories(config: Config) -> list[str]:
    """Try importing every factory (for ``oneiricd --check``), each module within the config's
    ``activation_timeout``; one message per failure, as ``<file>: component[N] (domain/key
    provider P): cannot import 'x.y:Z': <reason>``."""
    errors: list[str] = []
    per_file: dict[str, int] = {}
    hung: set[str] = set()
    timeout = config.daemon.activation_timeout
    for comp in config.components:
        index = per_file.get(comp.source, 0)
        per_file[comp.source] = index + 1
        try:
            module_name, attr = split_factory(comp.factory)
            factory_of(_import_within(module_name, timeout, hung), comp.factory, attr)
        except Exception as exc:  # any import-time failure is a finding, not a crash
            hint = ""
            if isinstance(exc, ModuleNotFoundError):
                hint = " (is the package installed, or its directory on PYTHONPATH?)"
            errors.append(
                f"{comp.source}: component[{index}] {_describe(comp)}: "
                f"cannot import {comp.factory!r}: {type(exc).__name__}: {exc}{hint}"
            )
    return errors
