"""Issue 12 regressions at the control server: forged audit lines (defect 10); more are added
with the server defects (admins always get in, fair share, watch amplification, SIGTERM with
non-reading clients, half-closed clients)."""

from __future__ import annotations

import logging
import os
import shlex

import pytest

from test_server import NOBODY, FakeHandler, run_as_nobody, running_server

pytestmark = pytest.mark.anyio


async def test_a_reader_cannot_forge_or_bloat_audit_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="oneiric.audit")
    forged_key = "cache note='approved by ops' outcome=ok uid=0 pid=1"
    forged_note = "ok' outcome=ok uid=0 pid=1\nINFO oneiric.audit: audit uid=0 op=resume"
    async with running_server(FakeHandler(), admin_group=None, mode=0o666) as path:
        os.chmod(os.path.dirname(path), 0o755)
        out = await run_as_nobody(
            path,
            [
                ("pause", {"domain": "adapter", "key": forged_key}),
                ("pause", {"domain": "adapter", "key": "k" * 60_000}),
                ("swap", {"domain": "adapter", "key": "cache", "provider": "a b=c"}),
                ("emit", {"topic": "t" * 300}),
                ("pause", {"domain": "adapter", "key": "cache", "note": forged_note}),
                ("pause", {"domain": "adapter", "key": "cache", "note": "n" * 5000}),
            ],
        )
    assert [o.get("code") for o in out] == ["bad_request"] * 4 + [
        "permission_denied",
        "bad_request",
    ], out
    assert "$.key" in out[0]["message"] and "$.note" in out[5]["message"]
    lines = [r.getMessage() for r in caplog.records if r.name == "oneiric.audit"]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "\n" not in line and len(line) < 512
    fields = [tok.split("=", 1) for tok in shlex.split(line)[1:]]
    names = [name for name, _ in fields]
    assert names == ["uid", "pid", "op", "target", "note", "outcome"], line
    values = dict(fields)
    assert values["uid"] == str(NOBODY) and values["outcome"] == "permission_denied"
    assert values["note"].startswith("ok' outcome=ok") and "\\n" in values["note"]
