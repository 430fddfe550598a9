"""What the benchmarks share: CPU accounting of process trees, the machine's load, statistics.

* ``CpuMeter({"postgres": pid, ...})``: CPU seconds (user + system, from ``/proc``) used by each
  named process and all its descendants, including children that exited meanwhile (their time
  is in the parent's ``cutime``/``cstime`` once it reaped them). ``snapshot()`` then ``since(s)``
  gives the CPU seconds per name between two points.
* ``MachineMeter``: the whole machine's busy CPU seconds (``/proc/stat``) and the load average,
  so a report can say how much of the machine the benchmark had (other processes run here).
* ``median``, ``spread``, ``percentile``: the figures printed.
"""
from __future__ import annotations

import math
import os
import statistics
import time

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """``(ppid, own cpu seconds, reaped children's cpu seconds)`` of ``pid`` or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime) / TICK, (cutime + cstime) / TICK


def _all_stats() -> dict[int, tuple[int, float, float]]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            found = _stat(int(name))
            if found is not None:
                out[int(name)] = found
    return out


class CpuMeter:
    """CPU seconds of named process trees (``roots``: name -> pid, or a list of pids); the names
    in ``solo`` count their own processes only, not their descendants (the benchmark's own
    process, whose children are the servers counted under their own names)."""

    def __init__(self, roots: dict[str, int | list[int]], solo: tuple[str, ...] = ()):
        self.roots = {name: ([pids] if isinstance(pids, int) else list(pids)) for name, pids in roots.items()}
        self.solo = set(solo)

    def add(self, name: str, pid: int) -> None:
        """Count the tree of ``pid`` under ``name`` too (e.g. a replaced worker)."""
        self.roots.setdefault(name, []).append(pid)

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far per name: every process of each tree plus what its members reaped."""
        stats = _all_stats()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        out = {}
        for name, pids in self.roots.items():
            total, todo, seen = 0.0, list(pids), set()
            while todo:
                pid = todo.pop()
                if pid in seen or pid not in stats:
                    continue
                seen.add(pid)
                _, own, reaped = stats[pid]
                if name in self.solo:
                    total += own
                    continue
                total += own + reaped
                todo += children.get(pid, [])
            out[name] = total
        return out

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        """CPU seconds per name between two snapshots (never negative: a tree that lost a
        process before its parent reaped it counts 0 for it)."""
        return {name: max(0.0, after.get(name, 0.0) - before.get(name, 0.0)) for name in after}


class MachineMeter:
    """The machine's busy CPU seconds (all processes, from ``/proc/stat``) and load average."""

    @staticmethod
    def busy_seconds() -> float:
        """CPU seconds spent not idle since boot, over all cores."""
        with open("/proc/stat", encoding="ascii") as fh:
            parts = [int(x) for x in fh.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
        return (sum(parts[:8]) - idle) / TICK

    @staticmethod
    def load() -> tuple[float, float, float]:
        """The 1, 5 and 15 minute load averages."""
        return os.getloadavg()


class Window:
    """Wall time, machine CPU and load over a stretch of a benchmark (``with Window() as w``)."""

    def __enter__(self) -> "Window":
        self.load_before = MachineMeter.load()
        self.busy_before = MachineMeter.busy_seconds()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self.t0
        self.busy = MachineMeter.busy_seconds() - self.busy_before
        self.load_after = MachineMeter.load()

    def describe(self, ours: float) -> str:
        """"machine: load 1-min a -> b; busy x of N cores, this benchmark's processes y, others z"."""
        cores = os.cpu_count() or 1
        seconds = max(self.seconds, 1e-9)
        return (f"machine: {cores} cores, load average {self.load_before[0]:.1f} -> {self.load_after[0]:.1f}; "
                f"busy {self.busy / seconds:.2f} cores, of which this benchmark's processes "
                f"{ours / seconds:.2f} and everything else {max(0.0, self.busy - ours) / seconds:.2f}")


def percentile(values, pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ``values`` (NaN when empty)."""
    values = sorted(values)
    if not values:
        return float("nan")
    rank = max(1, math.ceil(pct / 100 * len(values)))
    return values[rank - 1]


def median(values) -> float:
    """The median (NaN when empty)."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def spread(values) -> str:
    """``min-max`` of ``values`` with two decimals (``n/a`` when empty)."""
    values = list(values)
    if not values:
        return "n/a"
    return f"{min(values):.2f}-{max(values):.2f}"
