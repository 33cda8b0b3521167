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
- ``fuzz N SEED``: N random frames (garbage, half-valid JSON, valid ops with wrong fields,
  oversized lines) on one connection, each awaiting its one reply line; print the count of
  replies by code (a broken connection is reopened and counted).
- ``slowloris N``: open N connections that each send half a request line and nothing more;
  hold them until stdin closes.
- ``halfclose N``: open N connections that send a ``status`` and shut down their writing side
  at once; print how many replies came back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
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
    error = reply.get("error") or {}
    if os.environ.get("HOSTILE_VERBOSE"):
        return f"{error.get('code')}: {error.get('message')}"
    return str(error.get("code"))


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


_OPS = [
    "ping",
    "status",
    "health",
    "explain",
    "list",
    "pause",
    "resume",
    "drain",
    "swap",
    "reload",
    "run",
    "emit",
    "sync",
    "nope",
    "",
]


def _frame(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:  # garbage bytes
        return bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 200))).replace(
            b"\n", b" "
        )
    if kind == 1:  # truncated JSON
        return json.dumps({"id": rng.randrange(10**6), "op": rng.choice(_OPS)}).encode()[:-3]
    if kind == 2:  # an oversized line
        return b'{"id":1,"op":"ping","x":"' + b"x" * rng.randrange(65_000, 200_000) + b'"}'
    if kind == 3:  # deep nesting
        depth = rng.randrange(10, 5000)
        return b'{"id":1,"op":"status","x":' + b"[" * depth + b"]" * depth + b"}"
    value = rng.choice([None, True, -1, 2**70, 1.5, "", "x" * rng.randrange(300), [], {}])
    fields = {rng.choice(["domain", "key", "provider", "note", "topic", "wait", "timeout"]): value}
    if kind == 4:  # a known op with wrong fields
        return json.dumps({"id": rng.randrange(10**6), "op": rng.choice(_OPS), **fields}).encode()
    return json.dumps({"id": rng.choice([None, "1", 1.5, -5]), "op": rng.choice(_OPS)}).encode()


def _fuzz(path: str, n: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    codes: dict[str, int] = {}
    s = _connect(path)
    buf = bytearray()
    for _ in range(n):
        frame = _frame(rng)
        if b"watch" in frame:
            continue
        try:
            s.sendall(frame + b"\n")
            reply = _line(s, buf)
        except OSError:
            reply = None
        code = _outcome(reply)
        codes[code] = codes.get(code, 0) + 1
        if reply is None:  # dropped: reconnect and go on
            s.close()
            s = _connect(path)
            buf = bytearray()
    s.close()
    return {"frames": n, "codes": codes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--uid", type=int, required=True)
    ap.add_argument("--groups", default="", help="supplementary gids to hold, comma-separated")
    ap.add_argument("path")
    ap.add_argument("mode")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    if a.uid != os.getuid():
        os.setgroups([int(g) for g in a.groups.split(",") if g])
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
        got_in = backlog_full = 0
        while got_in < int(a.args[0]):
            try:
                s = _connect(a.path)
            except BlockingIOError:  # the listen backlog is full: an attacker just retries
                backlog_full += 1
                threading.Event().wait(0.001)
                continue
            s.close()
            got_in += 1
        out = {"connects": got_in, "backlog_full": backlog_full}
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
    elif a.mode == "fuzz":
        out = _fuzz(a.path, int(a.args[0]), int(a.args[1]))
    elif a.mode == "slowloris":
        socks = []
        for i in range(int(a.args[0])):
            s = _connect(a.path)
            with contextlib.suppress(OSError):
                s.sendall(b'{"id": %d, "op": "sta' % i)
            socks.append(s)
        print(json.dumps({"held": len(socks)}), flush=True)
        _hold_until_stdin_closes(socks)
        return
    elif a.mode == "halfclose":
        replies = 0
        for i in range(int(a.args[0])):
            s = _connect(a.path)
            s.sendall(_request("status", i))
            s.shutdown(socket.SHUT_WR)
            if _outcome(_line(s, bytearray())) == "ok":
                replies += 1
            s.close()
        out = {"replies": replies}
    else:
        raise SystemExit(f"unknown mode {a.mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
