"""The one exception tree: every exception class oneiric declares lives in oneiric.errors."""

from __future__ import annotations

import importlib
import pkgutil

import oneiric
from oneiric import errors

#: Declared elsewhere on purpose (see errors.py's docstring): the control client's own errors
#: (they must cost oneiricctl nothing to import) and private control-flow signals.
ELSEWHERE = {
    "oneiric.control.client": {
        "AccessDenied",
        "ControlError",
        "DaemonNotRunning",
        "RemoteError",
        "_Unreadable",
    },
    "oneiric.control.connection": {"_PeerGone"},
}


def test_every_exception_class_is_declared_in_errors() -> None:
    stray: list[str] = []
    for info in pkgutil.walk_packages(oneiric.__path__, "oneiric."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__ == info.name
                and name not in ELSEWHERE.get(info.name, set())
                and info.name != "oneiric.errors"
            ):
                stray.append(f"{info.name}.{name}")
    assert stray == [], f"declare these in oneiric/errors.py: {stray}"


def test_detail_is_on_the_base_class() -> None:
    assert errors.OneiricError("x").detail is None
    assert errors.NotFound("x", detail={"k": 1}).detail == {"k": 1}
    assert errors.ConfigError("bad", file="f", path="p").detail == "bad"
