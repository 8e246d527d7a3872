"""What the process may use: CPUs (affinity, cgroup quota) and memory (cgroup limit), read the way containers set
them, and the start-up paths that must not import the heavy libraries."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from imgclf import resources


def test_a_cgroup_v2_quota_and_memory_limit_are_read(tmp_path):
    table = tmp_path / "cgroup"
    table.write_text("0::/\n")  # a container's own namespace: its group is the root it sees
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker --cpus 1.5
    (tmp_path / "memory.max").write_text(f"{4 * 2**30}\n")
    (tmp_path / "memory.current").write_text(f"{2**30}\n")
    assert resources.cpu_quota(tmp_path, table) == 1.5
    assert resources.memory_limit(tmp_path, table) == 3 * 2**30
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "memory.max").write_text("max\n")
    assert resources.cpu_quota(tmp_path, table) is None and resources.memory_limit(tmp_path, table) is None


def test_a_cgroup_v1_limit_on_the_process_group_or_a_parent_is_read(tmp_path):
    table = tmp_path / "cgroup"
    table.write_text("4:memory:/jobs/42\n2:cpu,cpuacct:/jobs/42\n")  # Slurm, systemd: a group below the root
    for controller in ("memory", "cpu"):
        (tmp_path / controller / "jobs" / "42").mkdir(parents=True)
    unlimited = "9223372036854771712\n"  # v1's "no limit"
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(unlimited)
    (tmp_path / "memory" / "jobs" / "42" / "memory.limit_in_bytes").write_text(unlimited)
    (tmp_path / "memory" / "jobs" / "memory.limit_in_bytes").write_text(f"{2**31}\n")  # on the parent
    (tmp_path / "memory" / "jobs" / "memory.usage_in_bytes").write_text(f"{2**30}\n")
    (tmp_path / "cpu" / "jobs" / "42" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "jobs" / "42" / "cpu.cfs_period_us").write_text("100000\n")
    assert resources.memory_limit(tmp_path, table) == 2**30
    assert resources.cpu_quota(tmp_path, table) == 1.0
    (tmp_path / "cpu" / "jobs" / "42" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    (tmp_path / "memory" / "jobs" / "memory.limit_in_bytes").write_text(unlimited)
    assert resources.cpu_quota(tmp_path, table) is None and resources.memory_limit(tmp_path, table) is None


def test_a_quota_caps_every_worker_count_and_the_memory(monkeypatch):
    monkeypatch.setattr(resources, "cpu_quota", lambda root=None: 1.0)
    assert resources.usable_cpus() == 1
    assert resources.decode_workers() == 0 and resources.default_workers() == 1  # decoded here, not in a worker
    assert resources.threads_per_process(4) == 1
    monkeypatch.setattr(resources, "memory_limit", lambda root=None: 123)
    assert resources.available_memory() == 123


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) pins a process to cores")
def test_a_pinned_process_counts_only_its_cores():
    code = ("from imgclf import resources, device; import torch; device.resolve_device('cpu'); "
            "print(resources.usable_cpus(), resources.decode_workers(), torch.get_num_threads())")
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["1", "0", "1"]


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_neither_numpy_nor_yaml(flag):
    code = (f"import sys; sys.argv = ['imgclf', '{flag}']; from imgclf.cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'yaml', 'torch', 'PIL')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
