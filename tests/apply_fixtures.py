"""Shared by the tests/test_apply_*.py files: a host tree that is out of tune in every
file-backed setting kind, a byte-exact picture of a tree, and running the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Values as a stock Debian host reports them (kernel knob formats included).
UNTUNED = {
    "/proc/sys/vm/swappiness": "60\n",
    "/proc/sys/kernel/numa_balancing": "1\n",
    "/proc/sys/vm/zone_reclaim_mode": "0\n",
    "/proc/sys/net/core/rmem_max": "212992\n",
    "/proc/sys/net/core/wmem_max": "1048576000\n",  # bigger than the target: must not be lowered
    "/proc/sys/net/ipv4/tcp_rmem": "4096\t131072\t6291456\n",
    "/proc/sys/net/ipv4/tcp_wmem": "4096\t16384\t4194304\n",
    "/proc/sys/net/ipv4/tcp_congestion_control": "cubic\n",
    "/proc/sys/net/core/default_qdisc": "fq_codel\n",
    "/proc/sys/net/core/netdev_max_backlog": "1000\n",
    "/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n",
    "/sys/kernel/mm/transparent_hugepage/defrag": "always defer defer+madvise [madvise] never\n",
    "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "powersave\n",
    "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": "performance\n",
    "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor": "schedutil\n",
    "/sys/block/nvme0n1/queue/scheduler": "[mq-deadline] kyber none\n",
    "/sys/block/nvme0n1/queue/read_ahead_kb": "128\n",
    "/etc/security/limits.conf": "# /etc/security/limits.conf\n#*  soft  core  0\n@admin hard nofile 4096\n",
    "/etc/security/limits.d/10-site.conf": "*  soft  nofile  4096\n",
    "/etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="console=ttyS0"\n',
    "/proc/cmdline": "BOOT_IMAGE=/vmlinuz-6.1.0 root=UUID=1234 ro console=ttyS0 quiet\n",
    "/sys/kernel/iommu_groups/0/type": "DMA\n",  # an IOMMU translates DMA: iommu=pt means something
    "/etc/sysctl.d/99-site.conf": "# site settings\nvm.max_map_count = 262144\n",
    # a NIC on NUMA node 1 (CPUs 4-7) with two of its four IRQs on node 0
    "/sys/class/net/eth0/operstate": "up\n",
    "/sys/class/net/eth0/device/numa_node": "1\n",
    "/sys/class/net/eth0/device/msi_irqs/40": "msix\n",
    "/sys/class/net/eth0/device/msi_irqs/41": "msix\n",
    "/sys/class/net/eth0/device/msi_irqs/42": "msix\n",
    "/sys/class/net/eth0/device/msi_irqs/43": "msix\n",
    "/sys/devices/system/node/node0/cpulist": "0-3\n",
    "/sys/devices/system/node/node1/cpulist": "4-7\n",
    "/proc/irq/40/smp_affinity_list": "0-7\n",
    "/proc/irq/41/smp_affinity_list": "5\n",
    "/proc/irq/42/smp_affinity_list": "1\n",
    "/proc/irq/43/smp_affinity_list": "6-7\n",
}


def make_tree(root: Path, files: dict[str, str] | None = None) -> Path:
    for path, text in {**UNTUNED, **(files or {})}.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def picture(root: Path) -> dict[str, tuple]:
    """Every entry under root: (kind, mode, sha256 or link target) — byte-exact comparison."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = "/" + str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", st.st_mode & 0o7777, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


TEST_HOOK_VARS = {"GPUNODE_TEST_CRASH_AFTER", "GPUNODE_TEST_PROVE_BENCH", "GPUNODE_TEST_JOURNAL_FAIL",
                  "GPUNODE_TEST_SIGNAL_IN_UNDO"}


def with_test_hooks(pythonpath: str | None) -> str:
    """PYTHONPATH with tests/testhooks first (its sitecustomize installs the hooks)."""
    return os.pathsep.join(filter(None, [str(ROOT / "tests" / "testhooks"), pythonpath]))


def gpunode(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("GPUNODE_TEST_CRASH_AFTER", "GPUNODE_STATE_DIR")}
    full_env.update({"COLUMNS": "200", **(env or {})})
    if TEST_HOOK_VARS & full_env.keys():  # test hooks live in test code only (tests/testhooks)
        full_env["PYTHONPATH"] = with_test_hooks(full_env.get("PYTHONPATH"))
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


def apply_json(*args: str, env: dict | None = None) -> tuple[int, dict]:
    proc = gpunode("apply", "--json", *args, env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def on_a_terminal(argv: list[str], env: dict, cwd: Path = ROOT) -> tuple[subprocess.Popen, int]:
    """Start `argv` as an operator's ssh session runs it: in a session of its own whose
    controlling terminal is a fresh pseudo-terminal (stdin, stdout and stderr). -> (process, the
    master side). Closing the master is the terminal closing: the kernel sends the process SIGHUP
    (and SIGCONT), and its writes to the terminal fail with EIO from then on."""
    import fcntl
    import signal
    import termios

    master, slave = os.openpty()

    def take_the_terminal() -> None:  # in the child, after setsid (start_new_session)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as a login shell starts it (not nohup's SIG_IGN)

    try:
        proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                start_new_session=True, preexec_fn=take_the_terminal)
    finally:
        os.close(slave)
    return proc, master
