"""``make fleet-sim``: a fleet you can watch converge (SPEC §9, issue 11).

A real static web server (Debian's nginx, started here as our own process: its own prefix,
config and logs in a temporary directory, a loopback port — never the system service) serves a
TUF repository made with the publisher library. Then:

1. **Real hosts** (``--real``, default 50): that many real ``oneiricd`` processes, each with its
   own socket, state directory and health file, ``refresh = --refresh`` (default 5s). Once all
   serve version 1: origin requests/s and bytes/s while idle (nginx's access log); publish a
   change and measure publish → each host serving the new provider (the host's own
   ``remote.applied_at``, written after the swap) as p50/p99/max; stop nginx and count hosts
   ``stale`` and still healthy; start it again and wait until all are ``ok``.
2. **Light hosts** (``--hosts``, default 0): that many light hosts — the daemon's own sync code
   (``RemoteSync``, python-tuf's client, the one-step diff) without components, many per
   process (bench/_fleet_light.py) — at ``--light-refresh`` (default 60s) against the same
   server: origin requests/s, bytes/s and nginx CPU while idle, then publish → 99 % and 100 %
   of hosts holding the new version.

Progress goes to stderr; the figures are printed as a table and written to
``bench/fleet-results.json``.

    python bench/fleet_sim.py [--real 50] [--refresh 5] [--hosts 10000] [--light-refresh 60]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _daemon import BIN, pct  # noqa: E402

from oneiric.remote import publish  # noqa: E402

FACTORY = "oneiric.builtin.cache:MemoryCache"


def log(msg: str) -> None:
    print(f"[fleet-sim {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def manifest(select_provider: str, note: str = "") -> bytes:
    out = [f"# {note}\n"]
    for provider in ("a", "b"):
        out.append(
            f'[[component]]\ndomain = "adapter"\nkey = "cache"\nprovider = "{provider}"\n'
            f'factory = "{FACTORY}"\n'
        )
    out.append(f'[selections.adapter]\ncache = "{select_provider}"\n')
    return "\n".join(out).encode()


def proc_cpu_s(pid: int) -> float:
    """User+system CPU of a process so far, its ended threads included (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- nginx ---------------------------------------------------------------------------------------


class Nginx:
    """Debian's nginx as a single foreground process of ours (master_process off), so its CPU
    is one /proc entry and stopping it is one signal to a pid we started."""

    def __init__(self, prefix: Path, root: Path) -> None:
        self.prefix = prefix
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.access = prefix / "access.log"
        temp = "".join(
            f"    {kind}_temp_path {prefix}/tmp/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
http {{
    log_format sim '$msec $status $bytes_sent';
    access_log {prefix}/access.log sim;
{temp}    types {{ application/json json; application/octet-stream whl; text/plain toml; }}
    default_type application/octet-stream;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
        etag on;
    }}
}}
"""
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-p",
                str(self.prefix),
                "-c",
                str(self.prefix / "nginx.conf"),
                "-e",
                str(self.prefix / "error.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:  # no readiness protocol in nginx: the port accepting is the event
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nginx did not start: {(self.prefix / 'error.log').read_text()}"
                    ) from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cpu_s(self) -> float:
        return proc_cpu_s(self.proc.pid) if self.proc is not None else 0.0

    def traffic(self, since: float, until: float) -> tuple[int, int]:
        """Requests and bytes sent logged with ``since <= $msec < until``."""
        n = b = 0
        with open(self.access) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and since <= float(parts[0]) < until:
                    n += 1
                    b += int(parts[2])
        return n, b


# -- real hosts --------------------------------------------------------------------------------


class RealHost:
    def __init__(self, base: Path, i: int, url: str, root: Path, refresh: float) -> None:
        self.dir = base / f"r{i}"
        (self.dir / "etc").mkdir(parents=True)
        self.health = self.dir / "health.json"
        self.config = self.dir / "etc" / "oneiricd.toml"
        self.config.write_text(
            "[daemon]\n"
            'health_interval = "1h"\n'
            'stop_timeout = "5s"\n'
            "watch = false\n"
            "[remote]\n"
            f'url = "{url}"\n'
            f'root = "{root}"\n'
            f'refresh = "{refresh}s"\n'
            f'refresh_max = "{refresh * 2}s"\n'
        )
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.dir / "notify"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False

    def start(self) -> None:
        env = dict(
            os.environ,
            NOTIFY_SOCKET=str(self.dir / "notify"),
            ONEIRIC_CONFIG=str(self.config),
            RUNTIME_DIRECTORY=str(self.dir),
            STATE_DIRECTORY=str(self.dir / "state"),
        )
        self.proc = subprocess.Popen(
            [str(BIN / "oneiricd"), "--log-level", "error"], env=env, stdin=subprocess.DEVNULL
        )

    def doc(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.health.read_bytes())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()


def wait_ready(hosts: list[RealHost], timeout: float) -> None:
    """READY=1 from every host's notify socket (an event, not a guess)."""
    deadline = time.monotonic() + timeout
    waiting = {h.notify.fileno(): h for h in hosts}
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{len(waiting)} host(s) not READY after {timeout:g}s")
        readable, _, _ = select.select(list(waiting), [], [], left)
        for fd in readable:
            if b"READY=1" in waiting[fd].notify.recv(65536):
                waiting.pop(fd).ready = True


def wait_all(
    hosts: list[RealHost], what: str, pred: Any, timeout: float, poll: float = 0.05
) -> float:
    """Poll the hosts' health files (the only interface a fleet has) until ``pred(doc)``
    holds for all; returns the seconds it took."""
    t0 = time.monotonic()
    pending = list(hosts)
    last = -1
    while pending:
        pending = [h for h in pending if not ((d := h.doc()) and pred(d))]
        if len(pending) != last:
            log(f"{what}: {len(hosts) - len(pending)}/{len(hosts)}")
            last = len(pending)
        if not pending:
            break
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what}: {len(pending)} host(s) still waiting after {timeout:g}s")
        time.sleep(poll)
    return time.monotonic() - t0


def serving(doc: dict[str, Any], provider: str) -> bool:
    comps = [c for c in doc.get("components", []) if c.get("key") == "cache"]
    return (
        bool(comps)
        and comps[0].get("provider") == provider
        and comps[0].get("lifecycle") == "ready"
    )


def real_phase(
    base: Path, repo: Path, root: Path, ngx: Nginx, n: int, refresh: float
) -> dict[str, Any]:
    log(f"starting {n} real oneiricd processes (refresh {refresh:g}s)")
    hosts = [RealHost(base / "real", i, ngx.url, root, refresh) for i in range(n)]
    out: dict[str, Any] = {"hosts": n, "refresh_s": refresh}
    out["load_at_start"] = round(os.getloadavg()[0], 2)
    try:
        t0 = time.monotonic()
        for h in hosts:
            h.start()
        wait_ready(hosts, timeout=300)
        out["all_ready_s"] = round(time.monotonic() - t0, 2)
        v1 = publish.Repo.load(repo).targets.signed.version
        wait_all(
            hosts, "serving v1", lambda d: d["remote"]["version"] == v1 and serving(d, "a"), 120
        )

        idle = 4 * refresh
        log(f"idle for {idle:g}s: origin traffic")
        cpu0, s0 = ngx.cpu_s(), time.time()
        time.sleep(idle)  # a measurement window, not a wait for an event
        s1, cpu1 = time.time(), ngx.cpu_s()
        reqs, sent = ngx.traffic(s0, s1)
        out["idle_req_per_s"] = round(reqs / (s1 - s0), 2)
        out["idle_bytes_per_s"] = round(sent / (s1 - s0), 1)
        out["idle_nginx_cpu_pct"] = round(100 * (cpu1 - cpu0) / (s1 - s0), 2)

        log("publishing v2 (select b)")
        publish.publish(repo, {"fleet.toml": manifest("b", "v2")}, {})
        published = time.time()
        v2 = publish.Repo.load(repo).targets.signed.version
        wait_all(
            hosts, "serving v2", lambda d: d["remote"]["version"] == v2 and serving(d, "b"), 120
        )
        lat = [h.doc()["remote"]["applied_at"] - published for h in hosts]  # type: ignore[index]
        out["converge_p50_s"] = round(pct(lat, 0.5), 3)
        out["converge_p99_s"] = round(pct(lat, 0.99), 3)
        out["converge_max_s"] = round(max(lat), 3)
        out["converge_goal_s"] = refresh + 1
        out["converge_met"] = max(lat) <= refresh + 1

        log("stopping nginx: hosts should go stale and keep serving")
        ngx.stop()
        t_stale = wait_all(hosts, "stale", lambda d: d["remote"]["status"] == "stale", 10 * refresh)
        docs = [h.doc() or {} for h in hosts]
        out["after_stop_stale"] = sum(d["remote"]["status"] == "stale" for d in docs)
        out["after_stop_healthy"] = sum(
            d.get("state") == "running" and serving(d, "b") for d in docs
        )
        out["after_stop_all_stale_s"] = round(t_stale, 2)
        log("starting nginx again")
        ngx.start()
        t_ok = wait_all(hosts, "ok again", lambda d: d["remote"]["status"] == "ok", 10 * refresh)
        out["after_restart_ok_s"] = round(t_ok, 2)
        out["after_restart_ok"] = sum((h.doc() or {})["remote"]["status"] == "ok" for h in hosts)
    finally:
        for h in hosts:
            h.stop()
        for h in hosts:
            h.reap()
    return out


# -- light hosts ---------------------------------------------------------------------------------


class LightFleet:
    def __init__(self, base: Path, n: int, procs: int, url: str, root: Path, refresh: float):
        self.n = n
        self.versions: dict[str, tuple[int, float]] = {}
        self.due: dict[str, float] = {}  # host -> when its accepting check was due
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.procs: list[subprocess.Popen[str]] = []
        per = -(-n // procs)
        for p in range(procs):
            first, count = p * per, min(per, n - p * per)
            if count <= 0:
                break
            proc = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "_fleet_light.py"),
                    str(first),
                    str(count),
                    str(base),
                    url,
                    str(root),
                    str(refresh),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self.procs.append(proc)
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            parts = line.split()
            with self.lock:
                if parts[0] == "A":
                    self.versions[parts[1]] = (int(parts[2]), float(parts[3]))
                    self.due[parts[1]] = float(parts[4])
                elif parts[0] == "E":
                    self.errors[parts[2]] = self.errors.get(parts[2], 0) + 1

    def lateness(self, version: int, since: float) -> list[float]:
        """Seconds from when each host's accepting check was due to its acceptance, for checks
        due after ``since``: the simulator's own queueing (event loop, threads, CPU) and the
        check itself; what a real host with its own CPU would not wait."""
        with self.lock:
            return sorted(
                t - self.due[h]
                for h, (v, t) in self.versions.items()
                if v >= version and self.due[h] >= since
            )

    def holding(self, version: int) -> list[float]:
        with self.lock:
            return [t for v, t in self.versions.values() if v >= version]

    def cpu_s(self) -> float:
        return sum(proc_cpu_s(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            try:
                assert p.stdin is not None
                p.stdin.write("stop\n")
                p.stdin.flush()
            except BrokenPipeError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_holding(fleet: LightFleet, version: int, share: float, timeout: float) -> None:
    t0 = time.monotonic()
    last = -1
    while True:
        have = len(fleet.holding(version))
        if have != last and (have - last >= fleet.n // 20 or have >= share * fleet.n):
            log(f"holding v{version}: {have}/{fleet.n}")
            last = have
        if have >= share * fleet.n:
            return
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"only {have}/{fleet.n} hosts hold v{version} after {timeout:g}s")
        time.sleep(0.25)


def light_dir(base: Path) -> Path:
    """Where the light hosts keep their state: tmpfs when there is one. Every host still
    writes (and fsyncs) its own metadata, targets and applied.json through the daemon's code;
    on a real fleet each has its own disk, while here 10,000 of them would queue their fsyncs
    on this machine's one disk -- a limit of the simulation, not of the product."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = Path(tempfile.mkdtemp(prefix="onfleet-light", dir=shm))
        (base / "light").symlink_to(d)
        return d
    return base / "light"


def light_phase(
    base: Path, repo: Path, root: Path, ngx: Nginx, n: int, procs: int, refresh: float
) -> dict[str, Any]:
    log(f"starting {n} light hosts in {procs} processes (refresh {refresh:g}s)")
    out: dict[str, Any] = {"hosts": n, "processes": procs, "refresh_s": refresh}
    out["load_at_start"] = round(os.getloadavg()[0], 2)
    v1 = publish.Repo.load(repo).targets.signed.version
    fleet = LightFleet(light_dir(base), n, procs, ngx.url, root, refresh)
    try:
        t0 = time.monotonic()
        wait_holding(fleet, v1, 1.0, timeout=refresh * 4)
        out["all_bootstrapped_s"] = round(time.monotonic() - t0, 1)
        idle = refresh
        log(f"idle for {idle:g}s: origin traffic")
        cpu0, fcpu0, s0 = ngx.cpu_s(), fleet.cpu_s(), time.time()
        time.sleep(idle)  # a measurement window
        s1, cpu1, fcpu1 = time.time(), ngx.cpu_s(), fleet.cpu_s()
        reqs, sent = ngx.traffic(s0, s1)
        out["idle_req_per_s"] = round(reqs / (s1 - s0), 1)
        out["idle_bytes_per_s"] = round(sent / (s1 - s0))
        out["idle_nginx_cpu_pct"] = round(100 * (cpu1 - cpu0) / (s1 - s0), 2)
        out["idle_hosts_cpu_pct"] = round(100 * (fcpu1 - fcpu0) / (s1 - s0), 1)
        out["idle_goal"] = "< 200 req/s"
        out["idle_met"] = reqs / (s1 - s0) < 200

        out["idle_cpu_ms_per_check"] = round(1000 * (fcpu1 - fcpu0) / max(reqs, 1), 3)
        out["load_before_publish"] = round(os.getloadavg()[0], 2)

        log("publishing v2")
        # the clock starts before the publish call: no host can see v2 before this moment
        published = time.time()
        cpu0, fcpu0 = ngx.cpu_s(), fleet.cpu_s()
        publish.publish(repo, {"fleet.toml": manifest("b", "light v2")}, {})
        v2 = publish.Repo.load(repo).targets.signed.version
        wait_holding(fleet, v2, 1.0, timeout=refresh * 3)
        done = time.time()
        cpu1, fcpu1 = ngx.cpu_s(), fleet.cpu_s()
        times = sorted(t - published for t in fleet.holding(v2))
        out["converge_99pct_s"] = round(times[int(0.99 * n) - 1], 1)
        out["converge_100pct_s"] = round(times[-1], 1)
        out["converge_goal"] = "100 % < 75 s"
        out["converge_met"] = times[-1] < 75
        late = fleet.lateness(v2, published)
        if late:
            out["check_due_to_accepted_p50_s"] = round(pct(late, 0.5), 2)
            out["check_due_to_accepted_p99_s"] = round(pct(late, 0.99), 2)
            out["check_due_to_accepted_max_s"] = round(late[-1], 2)
        reqs, sent = ngx.traffic(published, done)
        out["publish_req_per_s"] = round(reqs / (done - published), 1)
        out["publish_bytes_per_s"] = round(sent / (done - published))
        out["publish_nginx_cpu_pct"] = round(100 * (cpu1 - cpu0) / (done - published), 2)
        out["publish_hosts_cpu_pct"] = round(100 * (fcpu1 - fcpu0) / (done - published), 1)
        # all the simulator's CPU while converging (the unchanged checks of hosts already
        # converged included) over the hosts that took the new version
        out["publish_cpu_ms_per_update"] = round(1000 * (fcpu1 - fcpu0) / n, 2)
        out["load_after_converge"] = round(os.getloadavg()[0], 2)
        out["cores"] = os.cpu_count()
        out["check_errors"] = dict(fleet.errors)
    finally:
        fleet.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--real", type=int, default=50)
    ap.add_argument("--refresh", type=float, default=5.0)
    ap.add_argument("--hosts", type=int, default=0, help="light hosts (0: none)")
    ap.add_argument("--light-refresh", type=float, default=60.0)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--out", default=str(HERE / "fleet-results.json"))
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="onfleet", dir="/tmp"))
    results: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    ngx: Nginx | None = None
    try:
        repo = base / "repo"
        publish.init(repo)
        root = base / "root.json"
        shutil.copyfile(repo / "metadata" / "1.root.json", root)
        os.chmod(root, 0o644)
        publish.publish(repo, {"fleet.toml": manifest("a", "v1")}, {})
        ngx = Nginx(base / "nginx", repo)
        ngx.start()
        log(f"nginx {ngx.binary} serving {repo} at {ngx.url}")
        if args.real:
            results["real"] = real_phase(base, repo, root, ngx, args.real, args.refresh)
        if args.hosts:
            publish.publish(repo, {"fleet.toml": manifest("a", "light v1")}, {})
            results["light"] = light_phase(
                base, repo, root, ngx, args.hosts, args.procs, args.light_refresh
            )
    finally:
        if ngx is not None:
            ngx.stop()
        light = base / "light"
        if light.is_symlink():
            shutil.rmtree(light.resolve(), ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for phase in ("real", "light"):
        if phase in results:
            print(f"\n{phase} hosts:")
            for k, v in results[phase].items():
                print(f"  {k:28} {v}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
