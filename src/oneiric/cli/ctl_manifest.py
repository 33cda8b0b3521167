"""``oneiricctl manifest ...``: the publisher side of remote manifests (SPEC §9).

These commands work on a repository directory, not on the daemon: create it, make keys,
publish manifests and wheels, rotate keys, verify it as a host would, show its state. They are
the only part of oneiricctl that loads python-tuf (and with it securesystemslib, cryptography
and urllib3), imported inside each command so every other command stays import-light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from oneiric._durations import parse_duration
from oneiric.cli import render
from oneiric.cli._ctl import json_option, pass_ctl
from oneiric.cli._ctl_base import Ctl
from oneiric.cli._ctl_errors import fail

_F = TypeVar("_F", bound=Callable[..., Any])


def _expires(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value, what="expiry")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter("must be longer than zero")
    return seconds


#: REPO, an existing repository directory (every command but init, which makes it)
_REPO = click.argument("repo", type=click.Path(exists=True, file_okay=False))


def _files(flag: str, dest: str, metavar: str, help_text: str) -> Callable[[_F], _F]:
    """A repeatable option naming existing files (key files, wheels)."""
    return click.option(
        flag,
        dest,
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        metavar=metavar,
        help=help_text,
    )


_EXPIRES = click.option(
    "--expires",
    metavar="DURATION",
    callback=_expires,
    help="How long the signed metadata stays valid (e.g. 30d, 12h).",
)


@contextmanager
def _failures(ctl: Ctl, action: str) -> Iterator[None]:
    """Publisher mistakes, invalid manifests and TUF errors as one message and exit 1."""
    from oneiric.errors import ConfigError, OneiricError

    try:
        yield
    except (OneiricError, ConfigError, OSError, ValueError) as exc:
        fail(ctl, "bad_request", f"manifest {action}: {exc}")
    except Exception as exc:  # python-tuf's own errors (RepositoryError, DownloadError, ...)
        fail(ctl, "bad_request", f"manifest {action}: {type(exc).__name__}: {exc}")


def _emit(ctl: Ctl, doc: Any, lines: list[str]) -> None:
    click.echo(render.to_json(doc) if ctl.json else "\n".join(lines))


@click.group(
    epilog="""\b
A repository is a directory: REPO/keys (private keys, keep root's offline),
REPO/metadata and REPO/targets (serve these two with any static web server or
CDN, or point hosts' [remote] url at the directory). See docs/fleet.md.

\b
Example session:
  oneiricctl manifest init /srv/fleet --keys 2 --threshold 2
  install /srv/fleet/metadata/1.root.json as /etc/oneiric/root.json on hosts
  oneiricctl manifest publish /srv/fleet fleet.toml
  oneiricctl manifest status /srv/fleet"""
)
def manifest() -> None:
    """Publish signed remote manifests: create, sign, rotate and check a TUF repository."""


@manifest.command(
    epilog="""\b
Example:
  oneiricctl manifest init /srv/fleet --keys 2 --threshold 2 --expires 365d"""
)
@click.argument("repo", type=click.Path(file_okay=False))
@click.option("--keys", default=1, show_default=True, help="ed25519 keys per role.")
@click.option(
    "--threshold", default=1, show_default=True, help="Signatures required for root and targets."
)
@_EXPIRES
@json_option
@pass_ctl
def init(ctl: Ctl, repo: str, keys: int, threshold: int, expires: float | None) -> None:
    """Create a new repository in REPO and print the root.json to install on hosts."""
    from pathlib import Path

    with _failures(ctl, "init"):
        from oneiric.remote import publish

        root = publish.init(Path(repo), keys=keys, threshold=threshold, expires=expires)
        state = publish.status(Path(repo))
    _emit(
        ctl,
        {"repository": repo, "root": str(root), **state},
        [
            f"created repository {repo}: {keys} key(s) per role in {repo}/keys (mode 0600), "
            f"threshold {threshold} for root and targets",
            f"install {root} on every host as [remote] root (e.g. /etc/oneiric/root.json, "
            "mode 0644)",
            f"then publish a manifest: oneiricctl manifest publish {repo} fleet.toml",
        ],
    )


@manifest.command(epilog="Example:\n\n  oneiricctl manifest keygen ~/keys/targets-2025.key")
@click.argument("keyfile", type=click.Path(dir_okay=False))
@json_option
@pass_ctl
def keygen(ctl: Ctl, keyfile: str) -> None:
    """Write a new ed25519 private key to KEYFILE (mode 0600; never overwrites)."""
    from pathlib import Path

    with _failures(ctl, "keygen"):
        from oneiric.remote import publish

        signer = publish.keygen(Path(keyfile))
    keyid = signer.public_key.keyid
    _emit(ctl, {"keyfile": keyfile, "keyid": keyid}, [f"{keyfile}: ed25519 key {keyid}"])


@manifest.command(
    epilog="""\b
Examples:
  oneiricctl manifest publish /srv/fleet fleet.toml
  oneiricctl manifest publish /srv/fleet web.toml --name groups/web.toml
  oneiricctl manifest publish /srv/fleet fleet.toml --artifact dist/myco-1.2-py3-none-any.whl

\b
The manifest is validated first (the config's [[component]] and [selections.*]
rules, and every `artifact` must be published now or already be a target).
Targets are signed with --key files, else every REPO/keys/targets.N.key;
snapshot and timestamp with REPO/keys. Hosts pick it up on their next refresh
(or at once with `oneiricctl sync`)."""
)
@_REPO
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", "target", metavar="TARGET", help="Target name (default: FILE's name).")
@_files(
    "--artifact",
    "artifacts",
    "WHEEL",
    "A pure-Python wheel to publish as a target named after its file (repeatable).",
)
@_files(
    "--key",
    "keys",
    "KEYFILE",
    "Targets key to sign with (repeatable; default: REPO/keys/targets.*.key).",
)
@_EXPIRES
@json_option
@pass_ctl
def publish(
    ctl: Ctl,
    repo: str,
    file: str,
    target: str | None,
    artifacts: tuple[str, ...],
    keys: tuple[str, ...],
    expires: float | None,
) -> None:
    """Add or replace the manifest FILE (and wheels) and sign a new repository version."""
    from pathlib import Path

    with _failures(ctl, "publish"):
        from oneiric.errors import PublishError
        from oneiric.remote import publish as pub
        from oneiric.remote.manifest import parse_manifest

        name = target or Path(file).name
        data = Path(file).read_bytes()
        parsed = parse_manifest(name, data)
        wheels = {Path(w).name: Path(w).read_bytes() for w in artifacts}
        known = set(pub.Repo.load(Path(repo)).targets.signed.targets) | set(wheels)
        missing = sorted(parsed.artifacts() - known)
        if missing:
            raise PublishError(
                f"{name} names artifact(s) {', '.join(missing)} that are not targets of "
                f"{repo}; add them with --artifact WHEEL"
            )
        result = pub.publish(
            Path(repo),
            {name: data},
            wheels,
            targets_keys=[Path(k) for k in keys] or None,
            expires=expires,
        )
    t, ts = result.targets.signed, result.timestamp.signed
    info = t.targets[name]
    doc = {
        "repository": repo,
        "target": name,
        "length": info.length,
        "sha256": info.hashes["sha256"],
        "artifacts": sorted(wheels),
        "targets_version": t.version,
        "timestamp_version": ts.version,
        "expires": t.expires.isoformat(),
        "components": len(parsed.components),
    }
    lines = [
        f"published {name} ({info.length} bytes, {len(parsed.components)} component(s), "
        f"sha256 {info.hashes['sha256'][:16]}…) as targets version {t.version}"
    ]
    lines += [f"published artifact {w}" for w in sorted(wheels)]
    lines.append(f"timestamp version {ts.version}; targets expire {t.expires.isoformat()}")
    _emit(ctl, doc, lines)


@manifest.command(
    epilog="""\b
Examples:
  rotate a compromised targets key out, a new one in (signed by root):
    oneiricctl manifest keygen new-targets.key
    oneiricctl manifest rotate /srv/fleet --role targets \\
        --add new-targets.key --remove /srv/fleet/keys/targets.1.key
  replace a root key (signed by the old and the new root keys):
    oneiricctl manifest rotate /srv/fleet --role root --add root-2026.key \\
        --remove /srv/fleet/keys/root.1.key

\b
Added key files are copied into REPO/keys; removed ones move to REPO/keys/retired.
Hosts follow on their next refresh: no host needs touching."""
)
@_REPO
@click.option(
    "--role",
    required=True,
    type=click.Choice(["root", "targets", "snapshot", "timestamp"]),
    help="Whose keys change.",
)
@_files("--add", "add", "KEYFILE", "A private key to trust for ROLE (repeatable).")
@_files("--remove", "remove", "KEYFILE", "A private key of ROLE to revoke (repeatable).")
@click.option("--threshold", type=int, help="New signature threshold for ROLE.")
@_EXPIRES
@json_option
@pass_ctl
def rotate(
    ctl: Ctl,
    repo: str,
    role: str,
    add: tuple[str, ...],
    remove: tuple[str, ...],
    threshold: int | None,
    expires: float | None,
) -> None:
    """Change ROLE's keys or threshold in a new root version."""
    from pathlib import Path

    if not add and not remove and threshold is None:
        raise click.UsageError("nothing to rotate: give --add, --remove and/or --threshold")
    with _failures(ctl, "rotate"):
        from oneiric.remote import publish as pub

        result = pub.rotate(
            Path(repo),
            role,
            add=[Path(p) for p in add],
            remove=[Path(p) for p in remove],
            threshold=threshold,
            expires=expires,
        )
    root = result.root.signed
    doc: dict[str, Any] = {
        "repository": repo,
        "role": role,
        "root_version": root.version,
        "keys": sorted(root.roles[role].keyids),
        "threshold": root.roles[role].threshold,
    }
    _emit(
        ctl,
        doc,
        [
            f"root version {root.version}: {role} has {len(doc['keys'])} key(s), threshold "
            f"{doc['threshold']}",
            "hosts follow on their next refresh (oneiricctl sync checks at once)",
        ],
    )


@manifest.command(
    epilog="""\b
Examples:
  oneiricctl manifest verify /srv/fleet
  oneiricctl manifest verify /srv/fleet fleet.toml
  oneiricctl manifest verify /srv/fleet --root /etc/oneiric/root.json

Exits 1 when the repository or the manifest would be rejected by hosts."""
)
@_REPO
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--root",
    "root_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Trust anchor as installed on hosts (default: the repository's first root).",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="PREFIX",
    help="Check FILE's factories against these allow_factories prefixes too (repeatable).",
)
@json_option
@pass_ctl
def verify(
    ctl: Ctl, repo: str, file: str | None, root_file: str | None, allow: tuple[str, ...]
) -> None:
    """Verify REPO as a host would (signatures, thresholds, expiry, hashes), and FILE."""
    from pathlib import Path

    with _failures(ctl, "verify"):
        from oneiric.remote import publish as pub
        from oneiric.remote.manifest import parse_manifest

        report = pub.verify(Path(repo), Path(root_file) if root_file else None)
        if file is not None:
            data = Path(file).read_bytes()
            parsed = parse_manifest(Path(file).name, data, allow_factories=allow or None)
            report["manifest"] = {"file": file, "components": len(parsed.components)}
    lines = [f"{repo}: OK, {len(report['targets'])} target(s) verified as a host would"]
    if file is not None:
        lines.append(f"{file}: OK, {report['manifest']['components']} component(s)")
    _emit(ctl, report, lines)


@manifest.command(epilog="Example:\n\n  oneiricctl --json manifest status /srv/fleet | jq .roles")
@_REPO
@json_option
@pass_ctl
def status(ctl: Ctl, repo: str) -> None:
    """Versions, expiry dates, keys and thresholds per role, and the targets."""
    from pathlib import Path

    with _failures(ctl, "status"):
        from oneiric.remote import publish as pub

        doc = pub.status(Path(repo))
    rows = []
    for role, r in doc["roles"].items():
        signed = sum(1 for k in r["signed_by"] if k in r["keys"])
        cells = [role, str(r["version"]), r["expires"], str(r["threshold"])]
        rows.append([*cells, str(len(r["keys"])), str(signed)])
    headers = ["role", "version", "expires", "threshold", "keys", "signed by"]
    lines = [f"repository {repo}", *render.table(headers, rows), ""]
    lines.append(f"{len(doc['targets'])} target(s):")
    lines += [
        f"  {name}  {t['length']} bytes  sha256 {str(t['sha256'])[:16]}…"
        for name, t in doc["targets"].items()
    ]
    _emit(ctl, doc, lines)
