"""Hostile control-socket peers, run as a separate process under any uid (used by the issue 12
regressions and the hostile-peer suite). It imports as root, then drops to ``--uid`` (the venv
lives under /root, which other uids could not read), does its attack and prints one JSON line
with what it saw. Modes:

- ``hold N``: open N connections, ping on each, print each outcome, then hold them until stdin
  closes.
- ``churn N``: connect and close N times without reading; print how many got in.
- ``pipeline CONNS REQS OP``: each connection sends REQS requests in one write, then reads all
  the replies; print the counts of ok and error replies.
- ``noread REQS OP``: one connection sends REQS requests and never reads; prints ``sent``
  (partial when the daemon stops reading), then holds until stdin closes.
- ``watch N``: open N ``watch`` streams, read each one's first line, print what each got,
  then hold them (unread from then on) until stdin closes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import threading
from typing import Any


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(path)
    return s


def _line(s: socket.socket, buf: bytearray) -> dict[str, Any] | None:
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    reply: dict[str, Any] = json.loads(line)
    return reply


def _outcome(reply: dict[str, Any] | None) -> str:
    if reply is None:
        return "closed"
    if reply.get("ok"):
        return "ok"
    if "event" in reply:
        return "event"
    return str((reply.get("error") or {}).get("code"))


def _ask(s: socket.socket, request: bytes) -> str:
    """Send one request and return the outcome of the first line back. A refused connection
    may be closed before the request goes out: its error line is still there to read."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        s.sendall(request)
    try:
        return _outcome(_line(s, bytearray()))
    except ConnectionResetError:
        return "reset"


def _hold_until_stdin_closes(socks: list[socket.socket]) -> None:
    sys.stdin.read()
    for s in socks:
        s.close()


def _request(op: str, i: int) -> bytes:
    return json.dumps({"id": i, "op": op}).encode() + b"\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uid", type=int, required=True)
    ap.add_argument("path")
    ap.add_argument("mode")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.uid != os.getuid():
        os.setgroups([])
        os.setgid(a.uid)
        os.setuid(a.uid)
    out: dict[str, Any] = {}
    if a.mode == "hold":
        socks, outcomes = [], []
        for _ in range(int(a.args[0])):
            s = _connect(a.path)
            outcomes.append(_ask(s, _request("ping", 1)))
            socks.append(s)
        print(json.dumps({"outcomes": outcomes}), flush=True)
        _hold_until_stdin_closes(socks)
        return
    if a.mode == "churn":
        got_in = 0
        for _ in range(int(a.args[0])):
            s = _connect(a.path)
            s.close()
            got_in += 1
        out = {"connects": got_in}
    elif a.mode == "pipeline":
        conns, reqs, op = int(a.args[0]), int(a.args[1]), a.args[2]
        socks = [_connect(a.path) for _ in range(conns)]
        payload = b"".join(_request(op, i) for i in range(reqs))
        counts = {"ok": 0, "error": 0}

        def one(s: socket.socket) -> None:
            writer = threading.Thread(target=s.sendall, args=(payload,))
            writer.start()
            buf = bytearray()
            for _ in range(reqs):
                reply = _line(s, buf)
                counts["ok" if reply and reply.get("ok") else "error"] += 1
            writer.join()

        threads = [threading.Thread(target=one, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = counts
    elif a.mode == "noread":
        reqs, op = int(a.args[0]), a.args[1]
        s = _connect(a.path)
        s.setblocking(False)
        payload = b"".join(_request(op, i) for i in range(reqs))
        sent = 0
        try:
            while sent < len(payload):
                sent += s.send(payload[sent:])
        except BlockingIOError:
            pass  # the daemon stopped reading (its replies fill our buffer): enough
        print(json.dumps({"sent": sent}), flush=True)
        _hold_until_stdin_closes([s])
        return
    elif a.mode == "watch":
        socks, outcomes = [], []
        for i in range(int(a.args[0])):
            s = _connect(a.path)
            outcomes.append(_ask(s, _request("watch", i)))
            socks.append(s)
        print(json.dumps({"outcomes": outcomes}), flush=True)
        _hold_until_stdin_closes(socks)
        return
    else:
        raise SystemExit(f"unknown mode {a.mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
