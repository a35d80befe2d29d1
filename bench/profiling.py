"""Sampling profiles of a running process with py-spy, and a text summary of the hottest code.

py-spy writes folded stacks (``--format raw``: ``frame;frame;frame count`` per line) and, in a
second sampler, a flame graph SVG. ``summarize`` turns the folded stacks into two tables: self
time (where the CPU is) and inclusive time (which call trees hold it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    return shutil.which("py-spy")


def start_record(
    pid: int, out: Path, seconds: float, fmt: str, *, log: Path, rate: int = 67
) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` on ``pid`` for ``seconds``; wait on the returned process."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--rate",
        str(rate),
        "--format",
        fmt,
        "--output",
        str(out),
        "--nonblocking",
    ]
    with open(log, "ab") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


_SOURCE = re.compile(
    r"^.*?/(?:intentflow-bench-src-[^/]+|src-[0-9a-f]{12}|main)/(?=(?:streams|bench)/)"
)


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (pkg/file.py)``, without the line number."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = "stdlib/" + path.split("/", 1)[-1]
            break
    else:
        path = _SOURCE.sub("", path)  # a checkout, a snapshot of one, or an old commit's export
    return f"{m.group('func')} ({path})"


# (where the innermost frame is, its layer), first match wins
_LAYERS = (
    ("streams/features", "intentflow features (pure)"),
    ("streams/contracts/events", "decode + validate event (msgspec, pydantic)"),
    ("streams/events", "decode + validate event (msgspec, pydantic)"),
    ("msgspec", "decode + validate event (msgspec, pydantic)"),
    ("pydantic", "decode + validate event (msgspec, pydantic)"),
    ("streams/contracts", "encode scores and dead letters"),
    ("streams/processing/envelope", "profile envelope encode/decode"),
    ("streams/state", "profile envelope encode/decode"),
    ("streams/processing", "intentflow step (processing/)"),
    ("streams/model", "onnxruntime (bundle.predict)"),
    ("onnxruntime", "onnxruntime (bundle.predict)"),
    ("streams/worker", "intentflow worker (runner, sending, metrics)"),
    ("streams/", "intentflow other"),
    ("bench/", "bench harness code"),
    ("rocksdict", "faust table / rocksdb"),
    ("faust/stores", "faust table / rocksdb"),
    ("faust/", "faust framework"),
    ("mode/", "faust framework"),
    ("aiokafka", "aiokafka client"),
    ("kafka/", "aiokafka client"),
    ("prometheus_client", "prometheus_client"),
    ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("numpy", "numpy"),
    ("orjson", "json"),
    ("json", "json"),
)


def _bucket(frame: str) -> str:
    """Which layer a frame belongs to, for the layer table."""
    for marker, layer in _LAYERS:
        if marker in frame:
            return layer
    return "other"


WAITING = "event loop waiting in epoll (idle or polling)"


def _waiting(function: str) -> bool:
    """An innermost frame that is the event loop waiting on its sockets (epoll): py-spy can
    count it as active, but it is idle or nearly so, not work done for events."""
    return function == WAITING or function.startswith(("EpollSelector.select ", "select ("))


def summarize(folded: Path, top: int = 40) -> tuple[str, dict[str, object]]:
    """A text report of the hottest functions (self and inclusive) and the layers."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    layer_counts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        if frames[0].startswith(("process ", "thread ")):
            threads[frames[0]] += count
        named = [_short(f) for f in frames if not f.startswith(("process ", "thread "))]
        if not named:
            continue
        self_counts[named[-1]] += count
        layer_counts[WAITING if _waiting(named[-1]) else _bucket(named[-1])] += count
        for f in set(named):
            incl_counts[f] += count
    if total == 0:
        return "no samples\n", {"samples": 0}

    def table(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"{title}", f"{'share':>7} {'samples':>8}  function (file)"]
        for name, c in counts.most_common(top):
            rows.append(f"{100 * c / total:6.1f}% {c:8d}  {name}")
        return rows

    lines = [f"py-spy samples: {total} (all threads; idle time not sampled)", ""]
    lines += [*table("By layer (self time of the innermost frame)", layer_counts), ""]
    lines += [*table("Hottest functions, self time", self_counts), ""]
    lines += table("Hottest call trees, inclusive time", incl_counts)
    idle = sum(c for name, c in self_counts.items() if _waiting(name))
    summary = {
        "samples": total,
        "waiting_percent": round(100 * idle / total, 1),
        "layers": {k: round(100 * v / total, 1) for k, v in layer_counts.most_common()},
        "top_self": [
            {"function": k, "percent": round(100 * v / total, 1)}
            for k, v in self_counts.most_common(15)
        ],
        "top_inclusive": [
            {"function": k, "percent": round(100 * v / total, 1)}
            for k, v in incl_counts.most_common(25)
        ],
    }
    return "\n".join(lines) + "\n", summary
