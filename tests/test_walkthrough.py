"""docs/walkthrough.md cannot drift from the real output: every command of its transcripts runs,
in order, against a real oneiricd on the demo config (``make run``), and what the page shows
under each command is compared with what the command printed, with the volatile parts
(times, durations, pids, run ids, paths, counters inside results) normalised on both sides.

After a deliberate change of output, refresh the page from a real run:
``.venv/bin/python tests/test_walkthrough.py --update`` (then review the diff)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from demo import REPO, Demo, demo_daemon

PAGE = REPO / "docs" / "walkthrough.md"
#: where the page says the clone is
SHOWN_ROOT = "/work/main"


@dataclass
class Step:
    command: str
    shown: list[str]  # the output lines on the page
    line: int  # of the command, 1-based
    real: str = ""
    status: int = 0


@dataclass
class Transcript:
    lines: list[str]
    steps: list[Step] = field(default_factory=list)


def parse(text: str) -> Transcript:
    """Every ``console`` block's ``$ command`` lines and the output shown under each (the
    ``make run`` block is the daemon itself, and the exports are what the test's environment
    does already)."""
    lines = text.splitlines()
    t = Transcript(lines)
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```console":
            i += 1
            continue
        i += 1
        step: Step | None = None
        while lines[i].strip() != "```":
            if lines[i].startswith("$ "):
                step = Step(lines[i][2:], [], i + 1)
                t.steps.append(step)
            elif step is not None:
                step.shown.append(lines[i])
            i += 1
    t.steps = [
        s
        for s in t.steps
        if not s.command.startswith(("make run", "export ONEIRIC_SOCKET=", "export PATH="))
    ]
    return t


_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r)
    for p, r in [
        (r"\bnightly-\d{8}T\d{6}Z-[0-9a-f]{6}\b", "RUN-ID"),
        (r'"heartbeat":(null|\{[^{}]*\})', '"heartbeat":HB'),
        (r'("\w+"):\s?-?\d+(\.\d+)?(e-?\d+)?', r"\1:N"),  # counters and times inside results
        (r"\bpid \d+", "pid N"),
        (r"^(\s*)\d\d:\d\d:\d\d\b", r"\1HH:MM:SS"),  # history entries
        (r"-?\d+(\.\d+)? ms\b", "T ms"),
        (r"\(\d+(\.\d+)?s\)", "(Ts)"),
        (r"\bin \d+(\.\d+)?s\b", "in Ts"),
        (r"\bup \d+[smhd]\w*", "up T"),
        (r"\bafter \d+(\.\d+)?s\b", "after Ts"),
        (r"\bbeat \d+ written", "beat N written"),
        (r"\b(\d+[smhd](\d+[smhd])? ago|just now)", "AGO"),
    ]
]


def normalise(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw
        for pattern, replacement in _RULES:
            line = pattern.sub(replacement, line)
        out.append(" ".join(line.split()))  # table column widths follow the (volatile) cells
    while out and not out[-1]:
        out.pop()
    return out


#: The pauses a reader makes between commands, where the next command's output depends on
#: something in the background having happened (the page says so in its prose).
SETTLE: dict[str, str] = {
    # "Within two seconds the heartbeat's next beat asks for the cache and waits"
    'oneiricctl pause adapter cache --note "cache maintenance"': (
        "heartbeat: waiting for adapter/cache"
    ),
    # "Resume the cache and both go on": the greet run finishes before the drain starts
    "oneiricctl resume adapter cache": "run task/greet#1 finished",
}


def run(demo: Demo, steps: list[Step]) -> None:
    last = 0
    run_ids: dict[str, str] = {}  # the page's run id -> the real one
    for step in steps:
        command = step.command
        for shown, real in run_ids.items():
            command = command.replace(shown, real)
        if command == "echo $?":
            step.real, step.status = f"{last}\n", 0
            continue
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=demo.root,
            env=demo.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        step.real, step.status, last = proc.stdout, proc.returncode, proc.returncode
        shown_ids = re.findall(r"nightly-\d{8}T\d{6}Z-[0-9a-f]{6}", "\n".join(step.shown))
        real_ids = re.findall(r"nightly-\d{8}T\d{6}Z-[0-9a-f]{6}", step.real)
        run_ids.update(zip(shown_ids, real_ids, strict=False))
        settle = SETTLE.get(step.command)
        if settle is not None:
            demo.log.wait_for(settle)


def as_shown(demo: Demo, text: str) -> str:
    """Real output as the page shows it: paths as in a clone at /work/main."""
    return text.replace(str(demo.root), SHOWN_ROOT).replace(str(REPO), SHOWN_ROOT)


_STAMP = re.compile(r"^\S+Z (?=[A-Z]+ )")


def shown_log_lines(text: str) -> list[str]:
    """The daemon's log lines the page quotes (in terminal 1), without their timestamps."""
    return [line for line in text.splitlines() if line.startswith(("INFO ", "WARNING "))]


def test_the_walkthrough_shows_the_real_output() -> None:
    text = PAGE.read_text()
    transcript = parse(text)
    assert len(transcript.steps) >= 35  # the whole page, not a parse gone wrong
    with demo_daemon() as demo:
        run(demo, transcript.steps)
        demo.stop(signal.SIGINT)  # "Ctrl-C in terminal 1"
        log = {
            tuple(normalise(_STAMP.sub("", line)))
            for line in as_shown(demo, demo.log.text()).splitlines()
        }
        drift = [
            f"docs/walkthrough.md: the log line {line!r} is not in the real log"
            for line in shown_log_lines(text)
            if tuple(normalise(line)) not in log
        ]
        for step in transcript.steps:
            want = normalise("\n".join(step.shown))
            got = normalise(as_shown(demo, step.real))
            if want != got:
                drift.append(
                    f"docs/walkthrough.md:{step.line}: $ {step.command}\n"
                    + "  page:\n"
                    + "".join(f"    {x}\n" for x in want)
                    + "  real:\n"
                    + "".join(f"    {x}\n" for x in got)
                )
    assert not drift, "the walkthrough drifted from the real output:\n" + "\n".join(drift)


def update() -> None:
    """Rewrite the page's transcripts with a real run's output (paths as in /work/main)."""
    transcript = parse(PAGE.read_text())
    with demo_daemon() as demo:
        run(demo, transcript.steps)
        lines = transcript.lines
        for step in reversed(transcript.steps):
            real = as_shown(demo, step.real).rstrip("\n")
            start = step.line  # index of the first output line (0-based)
            lines[start : start + len(step.shown)] = real.splitlines() if real else []
    PAGE.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(f"usage: {sys.argv[0]} --update")
    update()
