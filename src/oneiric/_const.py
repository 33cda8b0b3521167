"""Names shared by every layer."""

from __future__ import annotations

from typing import Final, Literal

Domain = Literal["adapter", "service", "task", "event", "workflow"]
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
