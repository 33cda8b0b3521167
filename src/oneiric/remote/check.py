"""Static checks of ``[remote]`` for ``oneiricd --check`` and for the first bootstrap.

Stdlib only: ``--check`` must not need the network or python-tuf to say that the trust anchor
is missing, unsafe or not a TUF root, or that a local repository directory is not there.
"""

from __future__ import annotations

import json
import os
import stat

from oneiric.config.schema import RemoteConfig


def root_problem(path: str) -> str | None:
    """Why the trust anchor at ``path`` must not be used, or None. Group/world-writable files
    are refused: whoever can write the anchor can steer the host."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (
            f"root {path} does not exist: install the repository's root.json there "
            "(`oneiricctl manifest init` prints its path)"
        )
    except OSError as exc:
        return f"root {path}: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"root {path} is not a regular file"
    if st.st_mode & 0o022:
        return (
            f"root {path} is group- or world-writable (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"refusing it as a trust anchor: chmod go-w {path}"
        )
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        return f"root {path} is not readable JSON: {exc}"
    signed = doc.get("signed") if isinstance(doc, dict) else None
    if not isinstance(signed, dict) or signed.get("_type") != "root":
        return f"root {path} is not TUF root metadata (no signed._type = 'root')"
    if not doc.get("signatures"):
        return f"root {path} carries no signatures"
    return None


def check_remote(remote: RemoteConfig) -> list[str]:
    """Everything wrong with ``[remote]`` that can be seen without the network."""
    problems = []
    root = root_problem(remote.root)
    if root is not None:
        problems.append(f"[remote] {root}")
    if "://" not in remote.url and not os.path.isdir(os.path.join(remote.url, "metadata")):
        problems.append(
            f"[remote] url {remote.url} is a local path without a metadata/ directory "
            "(expected a TUF repository: REPO/metadata/ and REPO/targets/)"
        )
    return problems
