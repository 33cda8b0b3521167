"""Names shared by every layer.

oneiricctl imports this module on every run, so it imports nothing at run time: no
:mod:`typing` (``Domain`` is built on first use, by :func:`__getattr__`) and no :mod:`re` (the
topic pattern is compiled on first use).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing at run time
if TYPE_CHECKING:
    import re
    from typing import Final, Literal

    Domain = Literal["adapter", "service", "task", "event", "workflow"]


def __getattr__(name: str) -> object:
    if name == "Domain":  # msgspec reads it at run time (control.protocol)
        from typing import Literal

        return Literal["adapter", "service", "task", "event", "workflow"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DOMAINS: Final[tuple[str, ...]] = ("adapter", "service", "task", "event", "workflow")
VERSION: Final = "0.1.0"

# SPEC §7 exit statuses
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_RUNNING: Final = 3
EXIT_PERMISSION: Final = 4
# oneiricd
EXIT_CONFIG: Final = 78  # EX_CONFIG
EXIT_ALREADY_RUNNING: Final = 75  # EX_TEMPFAIL

# Component keys and provider names: what config accepts is exactly what the control protocol
# can address (and what an audit line can print without quoting).
NAME_PATTERN: Final = r"[A-Za-z0-9_.-]+"
MAX_NAME: Final = 128

# Event topics: the daemon (oneiric.domains.routing) and oneiricctl (a usage error before any
# request) apply the same rule. Glob characters belong in a handler's ``topics``, not here.
TOPIC_PATTERN: Final = r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*"
MAX_TOPIC: Final = 256
_TOPIC: list[re.Pattern[str]] = []  # compiled on first use


def topic_problem(topic: object) -> str | None:
    """What is wrong with ``topic`` as an event topic, or None when it is a valid one."""
    if not _TOPIC:
        import re

        _TOPIC.append(re.compile(TOPIC_PATTERN))
    if not isinstance(topic, str) or not _TOPIC[0].fullmatch(topic):
        return (
            f"invalid topic {topic!r}: use letters, digits and '_', separated by '.', ':', '/' "
            "or '-' (like user.created); glob characters belong in a handler's topics"
        )
    if len(topic) > MAX_TOPIC:
        return f"invalid topic: {len(topic)} characters, at most {MAX_TOPIC}"
    return None
