"""``--workers auto`` under a cgroup CPU quota: cgroup trees laid out as the kernel shows
them (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), in ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gearshift.serve.workers import cpu_quota, worker_count

CPUS = len(os.sched_getaffinity(0))


def _files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _tree(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    _files(root, files)
    (tmp_path / "self-cgroup").write_text(own)
    return root, tmp_path / "self-cgroup"


def test_v2_in_a_container_reads_its_own_cpu_max(tmp_path: Path) -> None:
    # docker run --cpus 1.5, Kubernetes limits.cpu 1500m: the container's cgroup is the root.
    root, own = _tree(tmp_path, "0::/\n", {"cgroup.controllers": "cpu io memory\n",
                                          "cpu.max": "150000 100000\n"})  # fmt: skip
    assert cpu_quota(root, own) == 1.5
    assert worker_count("auto", root, own) == 1  # rounded down: no worker without a core


def test_v2_the_smallest_quota_along_the_path_counts(tmp_path: Path) -> None:
    # A pod's limit on its slice, none on the container's own cgroup (systemd-style paths).
    root, own = _tree(tmp_path, "0::/kubepods.slice/pod1.slice/cri-abc.scope\n", {
        "kubepods.slice/cpu.max": "max 100000\n",
        "kubepods.slice/pod1.slice/cpu.max": "300000 100000\n",
        "kubepods.slice/pod1.slice/cri-abc.scope/cpu.max": "max 100000\n",
    })  # fmt: skip
    assert cpu_quota(root, own) == 3.0
    assert worker_count("auto", root, own) == min(CPUS, 3)


def test_no_quota_leaves_every_cpu_the_process_may_use(tmp_path: Path) -> None:
    root, own = _tree(tmp_path, "0::/\n", {"cpu.max": "max 100000\n"})
    assert cpu_quota(root, own) is None
    assert worker_count("auto", root, own) == CPUS


def test_v1_quota_and_period(tmp_path: Path) -> None:
    # Docker on cgroup v1 without a cgroup namespace: the host's path is shown, but the
    # container's own cgroup is what is mounted.
    own_lines = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n"
    root, own = _tree(tmp_path, own_lines, {
        "cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })  # fmt: skip
    assert cpu_quota(root, own) == 2.0
    assert worker_count("auto", root, own) == min(CPUS, 2)


def test_v1_without_a_quota(tmp_path: Path) -> None:
    root, own = _tree(tmp_path, "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n",
                                             "cpu/cpu.cfs_period_us": "100000\n"})  # fmt: skip
    assert cpu_quota(root, own) is None


@pytest.mark.parametrize("cpu_max", ["", "garbage\n", "100000\n", "100000 0\n", "a b\n"])
def test_an_unreadable_quota_is_no_quota(tmp_path: Path, cpu_max: str) -> None:
    root, own = _tree(tmp_path, "0::/\n", {"cpu.max": cpu_max})
    assert cpu_quota(root, own) is None
    assert worker_count("auto", root, own) == CPUS


def test_no_cgroup_file_system_at_all(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "none", tmp_path / "no-self-cgroup") is None
    assert worker_count("auto", tmp_path / "none", tmp_path / "no-self-cgroup") == CPUS


def test_a_path_that_climbs_out_is_not_followed(tmp_path: Path) -> None:
    root, own = _tree(tmp_path, "0::/../outside\n", {})
    _files(tmp_path, {"outside/cpu.max": "100000 100000\n"})
    assert cpu_quota(root, own) is None


def test_this_machine() -> None:
    """The real files: whatever they say, ``auto`` is between 1 and the CPUs."""
    assert 1 <= worker_count("auto") <= CPUS
