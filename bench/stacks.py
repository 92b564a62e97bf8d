"""Summarise py-spy's collapsed stacks (`--format raw --threads`): where each thread spends its samples.

python -m bench.stacks out/bench/py-spy/vitrine-A.txt [--top 15]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_THREAD = re.compile(r"^thread \(\d+\): (?P<name>[^;]*)$")


@dataclass(frozen=True)
class Stack:
    """One collapsed stack: the thread's name (pool index removed), frames root first, and its samples."""

    thread: str
    frames: tuple[str, ...]
    samples: int


def thread_names(text: str) -> dict[int, str]:
    """Thread id -> thread name from the `thread (tid): name` frames of a collapsed file."""
    names: dict[int, str] = {}
    for line in text.splitlines():
        match = re.match(r"^thread \((\d+)\): ([^;]*)", line)
        if match:
            names[int(match[1])] = match[2]
    return names


def cpu_by_thread_group(
    jiffies: dict[int, int], names: dict[int, str], clk_tck: int = 100, wall_s: float = 1.0
) -> dict[str, float]:
    """Cores used per thread group; threads py-spy never saw (no Python frames) are `native`."""
    out: dict[str, float] = {}
    for tid, used in jiffies.items():
        group = thread_group(names[tid]) if tid in names else "native (no Python frames: onnxruntime pool)"
        out[group] = out.get(group, 0.0) + used / clk_tck / wall_s
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def thread_group(name: str) -> str:
    """`vitrine-decode_1` -> `vitrine-decode`: the pool, not the worker."""
    return re.sub(r"_\d+$", "", name)


def parse_collapsed(text: str) -> list[Stack]:
    """Lines of `frame;frame;... count`; a leading `thread (tid): name` frame names the thread."""
    stacks = []
    for line in text.splitlines():
        body, _, count = line.rstrip().rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = body.split(";")
        thread = "all"
        if frames and (match := _THREAD.match(frames[0])):
            thread = thread_group(match["name"]) or "unnamed"
            frames = frames[1:]
        stacks.append(Stack(thread, tuple(frames), int(count)))
    return stacks


# Frames every stack of a thread shares (thread start-up, executors, the event loop runner): left out of
# the inclusive ranking so that it shows the work, not the plumbing.
PLUMBING = (
    "threading.py",
    "concurrent/futures/thread.py",
    "<frozen runpy>",
    "asyncio/runners.py",
    "uvicorn/_compat.py",
    "uvicorn/server.py",
    "app/cli.py",
)


def function_of(frame: str) -> str:
    """`decode (app/preprocess.py:83)` -> `decode (app/preprocess.py)`: a function, whatever its line."""
    return re.sub(r":\d+\)$", ")", frame)


@dataclass(frozen=True)
class GroupSummary:
    """One thread group's samples and its busiest functions, by self and by inclusive samples."""

    samples: int
    self: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]


def summarise(stacks: list[Stack], top: int = 12) -> dict[str, GroupSummary]:
    """Per thread group: total samples, top functions by self samples and by inclusive samples."""
    out: dict[str, GroupSummary] = {}
    groups = sorted({s.thread for s in stacks})
    for group in groups:
        own = [s for s in stacks if s.thread == group]
        self_counts: Counter[str] = Counter()
        inclusive: Counter[str] = Counter()
        for s in own:
            if s.frames:
                self_counts[function_of(s.frames[-1])] += s.samples
            for fn in {function_of(f) for f in s.frames}:
                if not fn.endswith(tuple(f"{p})" for p in PLUMBING)):
                    inclusive[fn] += s.samples
        out[group] = GroupSummary(sum(s.samples for s in own), self_counts.most_common(top), inclusive.most_common(top))
    return out


def format_summary(summary: dict[str, GroupSummary], rate_hz: float = 100.0, duration_s: float | None = None) -> str:
    """Readable text: each thread group with its busiest functions (share of that group's samples)."""
    lines = []
    for group, data in sorted(summary.items(), key=lambda kv: -kv[1].samples):
        total = data.samples
        busy = f", {total / rate_hz / duration_s:.2f} threads busy" if duration_s else ""
        lines.append(f"== {group}: {total} samples{busy}")
        for kind, ranked in (("self", data.self), ("inclusive", data.inclusive)):
            lines.append(f"  by {kind}:")
            for fn, n in ranked:
                lines.append(f"    {100 * n / max(total, 1):5.1f}%  {fn}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the summary of one or more py-spy raw files."""
    parser = argparse.ArgumentParser(prog="python -m bench.stacks", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy sampling rate in Hz (default 100)")
    parser.add_argument("--duration", type=float, help="recording seconds, to show threads busy")
    args = parser.parse_args(argv)
    for path in args.files:
        print(f"# {path}")
        print(format_summary(summarise(parse_collapsed(path.read_text()), args.top), args.rate, args.duration))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
