"""Config text that tests share, built from parts so each test shows only what it is about.

    CONFIG = daemon(stop_timeout="5s", watch=False) + CACHE_A_B + SELECT_CACHE_A

renders the ``[daemon]`` table, the two ``components:Thing`` candidates of ``adapter/cache``
(providers ``a`` and ``b``, named after themselves) that most daemon tests swap between, and
the selection of ``a`` — text a reader can still ``.replace()`` in (``cache = "a"``).
"""

from __future__ import annotations

import json


def toml_value(value: object) -> str:
    """A TOML literal for a str, bool, int or float (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return json.dumps(value)
    raise TypeError(f"no TOML literal for {value!r} here")


def daemon(**settings: object) -> str:
    """The ``[daemon]`` table with these keys, in order."""
    return "\n[daemon]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())


def component(
    domain: str, key: str, provider: str, factory: str, settings: dict[str, object] | None = None
) -> str:
    """One ``[[component]]`` entry (``settings`` as its inline table, when given)."""
    text = (
        f'\n[[component]]\ndomain = "{domain}"\nkey = "{key}"\nprovider = "{provider}"\n'
        f'factory = "{factory}"\n'
    )
    if settings is not None:
        table = ", ".join(f"{k} = {toml_value(v)}" for k, v in settings.items())
        text += f"settings = {{ {table} }}\n"
    return text


def thing(domain: str, key: str, provider: str, **settings: object) -> str:
    """A ``components:Thing`` candidate named after its provider (plus ``settings``: ``fail``,
    ``block``, ``value``; see tests/components.py)."""
    return component(domain, key, provider, "components:Thing", {"name": provider, **settings})


def selections(domain: str, **keys: str) -> str:
    """A ``[selections.DOMAIN]`` table: put it last, or before a ``[[component]]`` header."""
    return f"\n[selections.{domain}]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())


#: adapter/cache with two candidates, ``a`` and ``b``.
CACHE_A_B = thing("adapter", "cache", "a") + thing("adapter", "cache", "b")
#: ... and ``a`` selected.
SELECT_CACHE_A = selections("adapter", cache="a")
