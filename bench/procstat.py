"""CPU and memory accounting from /proc: who used the CPUs during a phase, and a server's resident memory."""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuTimes:
    """Aggregate CPU jiffies from the first line of /proc/stat (all CPUs together)."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> CpuTimes:
    """Busy and total jiffies from /proc/stat text; busy leaves out idle and iowait (guest is inside user)."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            values = [int(v) for v in parts[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice]
            values += [0] * (8 - len(values))
            idle = values[3] + values[4]
            busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
            return CpuTimes(busy=busy, total=busy + idle)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def parse_pid_stat(text: str) -> tuple[int, int]:
    """(ppid, utime+stime jiffies) from /proc/<pid>/stat text; the command name may hold spaces and ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15
    return int(rest[1]), int(rest[11]) + int(rest[12])


def parse_vm_kb(text: str, key: str) -> int | None:
    """A `VmRSS:`/`VmHWM:` style line of /proc/<pid>/status, in kB."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def read_cpu_times() -> CpuTimes:
    """The machine's CPU jiffies now."""
    return parse_proc_stat((PROC / "stat").read_text())


def pid_stats() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, utime+stime jiffies)} of every process now running."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = parse_pid_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # gone between listing and reading
    return stats


def descendants(roots: list[int], stats: dict[int, tuple[int, int]]) -> set[int]:
    """The given pids and every process below them, from a {pid: (ppid, jiffies)} table."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    stack = [p for p in roots if p in stats]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    return found


def tree_jiffies(roots: list[int], stats: dict[int, tuple[int, int]] | None = None) -> int:
    """CPU jiffies used so far by the given processes and all their descendants (threads included)."""
    stats = stats if stats is not None else pid_stats()
    return sum(stats[p][1] for p in descendants(roots, stats))


def rss_kb(pids: set[int] | list[int]) -> int:
    """Resident memory of exactly these processes, in kB (gone ones count 0)."""
    return _sum_kb(pids, "status", "VmRSS")


def pss_kb(pids: set[int] | list[int]) -> int:
    """Proportional set size of exactly these processes, in kB: each page shared by n processes counts 1/n, so
    a tree's sum does not count shared libraries and copy-on-write pages once per process, as the RSS sum does."""
    return _sum_kb(pids, "smaps_rollup", "Pss")


def _sum_kb(pids: set[int] | list[int], name: str, key: str) -> int:
    """The sum of one `key:  N kB` line of /proc/<pid>/<name> over these processes (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            total += parse_vm_kb((PROC / str(pid) / name).read_text(), key) or 0
        except OSError:
            continue
    return total


def thread_jiffies(pid: int) -> dict[int, int]:
    """CPU jiffies of each thread of a process, by thread id (native threads included)."""
    out: dict[int, int] = {}
    try:
        tasks = list((PROC / str(pid) / "task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out[int(task.name)] = parse_pid_stat((task / "stat").read_text())[1]
        except (OSError, ValueError, IndexError):
            continue
    return out


def vm_hwm_kb(pid: int) -> int | None:
    """Peak resident memory (VmHWM) of one process, in kB."""
    try:
        return parse_vm_kb((PROC / str(pid) / "status").read_text(), "VmHWM")
    except OSError:
        return None


@dataclass
class CpuShare:
    """CPU used during a phase, in cores (CPU-seconds per wall second), split by owner."""

    wall_s: float
    total_cores: float
    groups: dict[str, float]
    others_cores: float

    def as_dict(self) -> dict[str, float]:
        """Rounded figures for the result JSON."""
        return {
            "wall_s": round(self.wall_s, 3),
            "total_cores": round(self.total_cores, 3),
            **{f"{k}_cores": round(v, 3) for k, v in self.groups.items()},
            "others_cores": round(self.others_cores, 3),
        }


def cpu_share(
    before: CpuTimes,
    after: CpuTimes,
    groups_before: dict[str, int],
    groups_after: dict[str, int],
    wall_s: float,
    clk_tck: int = CLK_TCK,
) -> CpuShare:
    """Split the machine's busy time between named process groups and everything else."""
    wall_s = max(wall_s, 1e-9)
    busy = (after.busy - before.busy) / clk_tck / wall_s
    groups = {k: max(0, groups_after.get(k, 0) - groups_before.get(k, 0)) / clk_tck / wall_s for k in groups_before}
    others = max(0.0, busy - sum(groups.values()))
    return CpuShare(wall_s=wall_s, total_cores=busy, groups=groups, others_cores=others)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class PhaseMonitor:
    """Measures CPU by owner and samples the server's resident memory while one phase runs.

    Owners: `server` (the server's pid and all its descendants, so a server that forks workers is
    measured whole), `bench` (this process alone: in-process ceilings, the sampler), `loadgen` (children
    of this process reaped during the phase: wrk, hey), and `others` (everything else on the machine).
    """

    server_pids: list[int]
    interval_s: float = 0.2
    rss_peak_kb: int = 0  # the largest sum of VmRSS over the server's processes (the goal's measure)
    pss_peak_kb: int = 0  # the largest sum of Pss: what a tree of processes really holds
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0
    _cpu: CpuTimes | None = None
    _before: dict[str, int] = field(default_factory=dict)

    def _readings(self) -> dict[str, int]:
        stats = pid_stats()
        own = stats.get(os.getpid(), (0, 0))[1]
        return {
            "server": tree_jiffies(self.server_pids, stats),
            "bench": own,
            "loadgen": round(_children_cpu_s() * CLK_TCK),
        }

    def start(self) -> None:
        """Take the first readings and start sampling memory."""
        self._before = self._readings()
        self._cpu = read_cpu_times()
        self._started = time.monotonic()
        if self.server_pids:
            self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while True:
            # The tree again at every sample: a process the server starts during the phase counts too.
            tree = descendants(self.server_pids, pid_stats())
            self.rss_peak_kb = max(self.rss_peak_kb, rss_kb(tree))
            self.pss_peak_kb = max(self.pss_peak_kb, pss_kb(tree))
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> CpuShare:
        """Final readings (reap the load generator first, so that its CPU time is counted)."""
        after_cpu = read_cpu_times()
        wall = time.monotonic() - self._started
        after = self._readings()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        assert self._cpu is not None
        return cpu_share(self._cpu, after_cpu, self._before, after, wall)
