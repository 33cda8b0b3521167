"""Manifest targets: TOML with the config's ``[[component]]`` and ``[selections.*]`` tables.

Pure (stdlib and msgspec only, no TUF, no runtime): the host validates with it after TUF
verified the bytes, and ``oneiricctl manifest publish/verify`` validates with it before
signing, so a publisher finds a mistake before the fleet does. The rules are the config's own
(the same ``_component`` checks, the same error wording) plus what only a remote source needs:
``allow_factories`` prefixes and ``artifact`` target names.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence

import msgspec

from oneiric.config.loader import _Merge
from oneiric.config.schema import ComponentConfig
from oneiric.errors import ConfigError, ManifestError

__all__ = ["Manifest", "ManifestError", "merge_manifests", "parse_manifest", "source_of"]

_KEYS = ("component", "selections")


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """The validated content of one or more manifest targets, merged in order."""

    components: tuple[ComponentConfig, ...] = ()
    selections: dict[str, dict[str, str]] = {}

    def artifacts(self) -> set[str]:
        """Every artifact target the components name."""
        return {c.artifact for c in self.components if c.artifact is not None}


def source_of(target: str) -> str:
    """The candidate source of a manifest target (SPEC §9): ``remote:<target>``."""
    return f"remote:{target}"


class _ManifestMerge(_Merge):
    allow_artifacts = True


def parse_manifest(
    target: str, data: bytes, *, allow_factories: Sequence[str] | None = None
) -> Manifest:
    """Validate one target's bytes; ManifestError (reason ``malformed`` or
    ``disallowed_factory``) names the target and the entry that is wrong."""
    source = source_of(target)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(
            f"not valid UTF-8 (byte {exc.start})", reason="malformed", file=source
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"invalid TOML: {exc}", reason="malformed", file=source) from None
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise ManifestError(
            f"unknown table {unknown[0]!r}: a manifest holds only [[component]] and "
            "[selections.<domain>] tables",
            reason="malformed",
            file=source,
        )
    merge = _ManifestMerge(source)
    merge.files.append(source)
    try:
        merge._add_selections(doc.get("selections", {}), file=source)
        merge._add_components(doc.get("component", []), file=source)
    except ConfigError as exc:
        raise ManifestError(exc.detail, reason="malformed", file=source, path=exc.path) from None
    for comp, where in zip(merge.components, merge.where, strict=True):
        if allow_factories is not None and not factory_allowed(comp.factory, allow_factories):
            allowed = ", ".join(repr(p) for p in allow_factories) or "nothing"
            raise ManifestError(
                f"{where} ({comp.domain}/{comp.key} provider {comp.provider}): factory "
                f"{comp.factory!r} is not allowed by [remote] allow_factories ({allowed})",
                reason="disallowed_factory",
                file=source,
            )
        if comp.artifact is not None and not _target_path(comp.artifact):
            raise ManifestError(
                f"{where}.artifact: expected the target name of a wheel "
                f'(like "myco_components-1.2-py3-none-any.whl"), got {comp.artifact!r}',
                reason="malformed",
                file=source,
            )
    return Manifest(components=tuple(merge.components), selections=merge.selections)


def merge_manifests(parts: Iterable[Manifest]) -> Manifest:
    """Targets merged in order: components concatenate (each keeps its ``remote:<target>``
    source), selections merge key by key, later wins."""
    components: list[ComponentConfig] = []
    selections: dict[str, dict[str, str]] = {}
    for part in parts:
        components.extend(part.components)
        for domain, table in part.selections.items():
            selections.setdefault(domain, {}).update(table)
    return Manifest(components=tuple(components), selections=selections)


def factory_allowed(factory: str, prefixes: Sequence[str]) -> bool:
    """``"myco."`` allows the module ``myco`` and everything under it; a prefix may also
    name a module exactly (``"myco.web:"``) or end mid-name (``"myco.comp"``)."""
    module = factory.partition(":")[0]
    return any(factory.startswith(p) or f"{module}.".startswith(p) for p in prefixes)


def _target_path(name: str) -> bool:
    parts = name.split("/")
    return (
        bool(name)
        and name.endswith(".whl")
        and not name.startswith("/")
        and ".." not in parts
        and "" not in parts
    )
