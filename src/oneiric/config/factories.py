"""Importing component factories from their ``package.module:attr`` specs.

The loader only checks a factory's *syntax* (loading or reloading a config must never run
component code); these helpers do the actual import: ``resolve_factory`` for the runtime,
``check_factories`` for ``oneiricd --check``, which reports every unimportable factory
instead of stopping at the first.
"""

from __future__ import annotations

import importlib
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


def check_factories(config: Config) -> list[str]:
    """Try importing every factory (for ``oneiricd --check``); one message per failure, as
    ``<file>: component[N] (domain/key provider P): cannot import 'x.y:Z': <reason>``."""
    errors: list[str] = []
    per_file: dict[str, int] = {}
    for comp in config.components:
        index = per_file.get(comp.source, 0)
        per_file[comp.source] = index + 1
        try:
            resolve_factory(comp.factory)
        except Exception as exc:  # any import-time failure is a finding, not a crash
            hint = ""
            if isinstance(exc, ModuleNotFoundError):
                hint = " (is the package installed, or its directory on PYTHONPATH?)"
            errors.append(
                f"{comp.source}: component[{index}] {_describe(comp)}: "
                f"cannot import {comp.factory!r}: {type(exc).__name__}: {exc}{hint}"
            )
    return errors
