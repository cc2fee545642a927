"""Explain why the kernel refused to let us trace a process, and what to do about it.

Checks, in the order a person would: are we root or do we hold CAP_SYS_PTRACE, what Yama's
ptrace_scope allows, whether we run inside a container, and whose process it is.
"""

from __future__ import annotations

import os
from typing import List, Optional

from stackdump import proc

CAP_SYS_PTRACE = 19


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def has_cap_sys_ptrace() -> bool:
    caps = proc.read_status(os.getpid()).get("CapEff", "0")
    try:
        return bool(int(caps, 16) >> CAP_SYS_PTRACE & 1)
    except ValueError:
        return False


def in_container() -> bool:
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    cgroup = _read("/proc/1/cgroup") or ""
    return any(word in cgroup for word in ("docker", "kubepods", "containerd", "libpod", "lxc"))


def help_text(pid: int) -> str:
    hints: List[str] = []
    euid = os.geteuid()
    privileged = has_cap_sys_ptrace()
    scope = _read("/proc/sys/kernel/yama/ptrace_scope")
    target_uid = proc.read_status(pid).get("Uid", "").split()
    if euid == 0 and not privileged:
        hints.append(
            "stackdump runs as root but without CAP_SYS_PTRACE (dropped by a container, "
            "systemd CapabilityBoundingSet= or a wrapper such as capsh/setpriv), and "
            f"process {pid} belongs to uid {target_uid[0] if target_uid else '?'}: grant "
            "CAP_SYS_PTRACE, or run stackdump as that user"
        )
    elif not privileged:
        if target_uid and target_uid[0] != str(euid):
            hints.append(
                f"process {pid} belongs to uid {target_uid[0]}; run stackdump as that user or "
                f"as root: sudo stackdump -p {pid}"
            )
        else:
            hints.append(f"run as root (sudo stackdump -p {pid}) or grant CAP_SYS_PTRACE")
    if scope == "1" and not privileged:
        hints.append(
            "kernel.yama.ptrace_scope is 1 (only a parent may trace its children): run as root, "
            "grant CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep), or "
            "'sysctl kernel.yama.ptrace_scope=0'"
        )
    elif scope == "2" and not privileged:
        hints.append(
            "kernel.yama.ptrace_scope is 2 (admin only): run as root or with CAP_SYS_PTRACE"
        )
    elif scope == "3":
        hints.append(
            "kernel.yama.ptrace_scope is 3: ptrace is disabled until reboot; nothing can attach"
        )
    if in_container() and not has_cap_sys_ptrace():
        hints.append(
            "inside a container: start it with --cap-add SYS_PTRACE "
            "(Kubernetes: securityContext.capabilities.add: [SYS_PTRACE])"
        )
    elif in_container():
        hints.append(
            "inside a container: a seccomp or AppArmor profile may block ptrace; "
            "try --security-opt seccomp=unconfined or an apparmor=unconfined profile"
        )
    if not hints:
        hints.append(
            "a security module (SELinux, AppArmor, seccomp) or a non-dumpable target "
            "(prctl PR_SET_DUMPABLE 0) may forbid tracing; try as root with CAP_SYS_PTRACE"
        )
    return "\n".join(f"hint: {h}" for h in hints)
