"""oneiric: a host daemon for pluggable async Python components."""

from __future__ import annotations

from oneiric._const import DOMAINS, VERSION

__version__ = VERSION
__all__ = ["DOMAINS", "__version__"]
