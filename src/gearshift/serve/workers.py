"""``gearshift serve --workers N``: N worker processes on one port, and their supervisor.

Each worker is ``gearshift serve`` itself, started with the same arguments plus
``--worker``: it binds the port with ``SO_REUSEPORT`` (the kernel spreads connections over
the workers), runs its own event loop, upstream pools and breakers. The supervisor (this
module, in the parent) starts them, restarts one that dies (after a short pause when it died
young, so a broken config cannot spin), and on SIGTERM/SIGINT forwards SIGTERM so every
worker drains its requests and streams, then exits 0.

Metrics: the supervisor gives every worker the same ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
temporary directory, removed at exit), so a scrape of ``/metrics`` on any worker reports the
sum over all of them (gauges: in-flight requests summed over live workers, breaker state the
worst). ``/gearshift/stats`` stays per worker and says which (``worker``: its pid).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger("gearshift")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_YOUNG_S = 5.0  # a worker that dies sooner than this is restarted after a pause
_PAUSE_S = 1.0


CGROUP_ROOT = Path("/sys/fs/cgroup")
OWN_CGROUP = Path("/proc/self/cgroup")


def worker_count(value: str, cgroup_root: Path = CGROUP_ROOT, own_cgroup: Path = OWN_CGROUP) -> int:
    """``auto`` or a positive integer. ``auto``: the CPUs this process may run on (its
    affinity mask), fewer under a cgroup CPU quota (a container's ``--cpus``, a Kubernetes
    ``limits.cpu``): the quota rounded down, at least 1."""
    if value == "auto":
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
        quota = cpu_quota(cgroup_root, own_cgroup)
        return cpus if quota is None else max(1, min(cpus, math.floor(quota)))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"workers must be a positive integer or 'auto', not {value!r}")
    return n


def cpu_quota(root: Path = CGROUP_ROOT, own: Path = OWN_CGROUP) -> float | None:
    """The CPUs a cgroup CPU quota gives this process, the smallest along its cgroup and
    their parents (cgroup v2 ``cpu.max``; v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``);
    None when no quota is set or none can be read."""
    try:
        lines = own.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:  # "hierarchy:controllers:path"; v2 is "0::path"
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            quotas += [q for d in _cgroup_dirs(root, path) if (q := _v2_quota(d)) is not None]
        elif "cpu" in controllers.split(","):
            for base in (root / controllers, root / "cpu"):
                quotas += [q for d in _cgroup_dirs(base, path) if (q := _v1_quota(d)) is not None]
    return min(quotas, default=None)


def _cgroup_dirs(base: Path, path: str) -> list[Path]:
    """The process's cgroup directory under ``base`` and its parents up to ``base``; just
    ``base`` when the path is not there (a container sees its own cgroup as the root)."""
    parts = [part for part in path.split("/") if part]
    dirs = [base]
    for part in parts:
        dirs.append(dirs[-1] / part)
    if ".." in parts or not dirs[-1].is_dir():
        return [base] if base.is_dir() else []
    return dirs


def _v2_quota(cgroup: Path) -> float | None:
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(cgroup: Path) -> float | None:
    try:
        quota = int((cgroup / "cpu.cfs_quota_us").read_text())
        period = int((cgroup / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


class Supervisor:
    """Keeps ``count`` worker processes running until told to stop."""

    def __init__(
        self,
        count: int,
        argv: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        grace: float = 30.0,
    ) -> None:
        self.count = count
        self._argv = list(argv)
        self._clock = clock
        self._grace = grace
        self._stopping = False
        self.workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.restarts = 0
        self._dir = tempfile.mkdtemp(prefix="gearshift-metrics-")

    def _spawn(self) -> None:
        env = {**os.environ, MULTIPROC_ENV: self._dir}
        proc = subprocess.Popen([sys.executable, "-m", "gearshift", *self._argv], env=env)
        self.workers[proc.pid] = (proc, self._clock())
        log.info("worker %d started", proc.pid)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping %d workers (signal %d): draining", len(self.workers), signum)
        for proc, _ in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP (or a worker's reload over HTTP): every worker reloads its configuration."""
        if self._stopping:
            return
        log.info("reloading the configuration of %d workers (SIGHUP)", len(self.workers))
        for proc, _ in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; 0 when every worker drained and exited cleanly."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._hangup)
        try:
            for _ in range(self.count):
                self._spawn()
            while not self._stopping:
                self._reap()
                time.sleep(0.2)  # the supervisor's poll interval (it serves no traffic)
            return self._drain()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _reap(self) -> None:
        from prometheus_client import multiprocess

        for pid, (proc, started) in list(self.workers.items()):
            code = proc.poll()
            if code is None or self._stopping:
                continue
            del self.workers[pid]
            multiprocess.mark_process_dead(pid, self._dir)  # type: ignore[no-untyped-call]
            log.warning("worker %d exited with %s; starting a new one", pid, code)
            if self._clock() - started < _YOUNG_S:
                time.sleep(_PAUSE_S)  # died young: do not spin on a broken setup
            self.restarts += 1
            self._spawn()

    def _drain(self) -> int:
        deadline = self._clock() + self._grace + 5.0
        status = 0
        for proc, _ in self.workers.values():
            try:
                code = proc.wait(timeout=max(0.1, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            status = status or (0 if code in (0, -signal.SIGTERM) else 1)
        log.info("all workers stopped")
        return status


__all__ = ["MULTIPROC_ENV", "Supervisor", "cpu_quota", "worker_count"]
