"""Artifact wheels on disk: safe unpacking and garbage collection (SPEC §9)."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from oneiric.errors import ArtifactError
from oneiric.remote.artifacts import collect, is_unpacked, unpack_wheel
from remote_repo import make_wheel


def test_unpack_is_idempotent_and_marked_complete(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "pkg_x", "1.0", {"pkg_x/__init__.py": "X = 1\n"})
    root = tmp_path / "artifacts"
    dest = unpack_wheel(wheel, root, "a" * 64)
    assert (dest / "pkg_x" / "__init__.py").read_text() == "X = 1\n"
    assert is_unpacked(root, "a" * 64)
    assert unpack_wheel(wheel, root, "a" * 64) == dest
    assert [p.name for p in root.iterdir()] == ["a" * 64]  # no temporary directory left


@pytest.mark.parametrize("member", ["../evil.py", "/abs/evil.py", "pkg/../../evil.py"])
def test_unsafe_member_paths_are_refused(tmp_path: Path, member: str) -> None:
    wheel = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, "boom")
    with pytest.raises(ArtifactError, match="unsafe member path"):
        unpack_wheel(wheel, tmp_path / "artifacts", "b" * 64)
    assert not (tmp_path / "evil.py").exists()
    assert not is_unpacked(tmp_path / "artifacts", "b" * 64)


def test_not_a_zip_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "junk-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a usable wheel"):
        unpack_wheel(wheel, tmp_path / "artifacts", "c" * 64)


def test_collect_keeps_what_is_named_or_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "artifacts"
    for sha in ("keep", "gone", "live"):
        (root / sha).mkdir(parents=True)
        (root / f"{sha}.whl").write_bytes(b"w")
    monkeypatch.setattr(sys, "path", [*sys.path, str(root / "live")])
    collect(root, {"keep"})
    # an imported artifact's directory stays (its code runs); its downloaded wheel may go
    assert sorted(p.name for p in root.iterdir()) == ["keep", "keep.whl", "live"]
