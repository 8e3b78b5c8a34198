"""Pin the agent's loaded programs in bpffs, and attach them from their pins.

The agent compiles and loads the datapath once (`Datapath.load()`), then
`pin_programs` pins every program as `<pin_dir>/prog_<name>`. Anything that only has
to attach a program, the CNI plugin at ADD above all, opens the pins with
bpf_obj_get and attaches them (`attach_pinned`): no compiler, no bcc, about a
millisecond.
"""

from __future__ import annotations

import os
from pathlib import Path

from bpf import libbpf
from bpf.loader import PARTS, POD_EGRESS, Datapath, attach_tc, part_programs, register_pod_if

PREFIX = "prog_"
POD_INGRESS = "rr_pod_ingress"
POL_TO_POD, POL_FROM_POD = "rr_pol_to_pod", "rr_pol_from_pod"  # the policy part


def _obj_pin(fd: int, path: Path) -> None:
    """bpf_obj_pin(fd, path): BpfError (an OSError) on failure."""
    libbpf.check(libbpf.lib().bpf_obj_pin(fd, str(path).encode()), f"pin {path}")


def _obj_get(path: Path) -> int:
    """bpf_obj_get(path): a new fd on the pinned object; BpfError on failure."""
    return libbpf.check(libbpf.lib().bpf_obj_get(str(path).encode()), f"open {path}")


def prog_path(pin_dir: Path, name: str) -> Path:
    return pin_dir / f"{PREFIX}{name}"


def pin_programs(dp: Datapath) -> None:
    """Pin each loaded program of dp as <pin_dir>/prog_<name>, replacing older pins,
    and remove the pins of programs dp's configuration does not load (the pod egress
    program, per-packet LB switched off), so that what attaches from the pins follows.

    A pin is made under a temporary name and renamed over the old one, so a reader
    never finds the path missing while an agent restarts."""
    pin_dir = dp.cfg.pin_dir
    pin_dir.mkdir(parents=True, exist_ok=True)
    for name, fd in sorted(dp.fds.items()):
        final = prog_path(pin_dir, name)
        tmp = pin_dir / f"tmp_{os.getpid()}_{name}"  # bpffs refuses "." in names
        if tmp.exists():
            tmp.unlink()
        _obj_pin(fd, tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            tmp.unlink()
            raise
    for part, (_, names) in PARTS.items():
        for name in set(names) - set(part_programs(part, dp.cfg)) - set(dp.fds):
            prog_path(pin_dir, name).unlink(missing_ok=True)
    # a part not loaded this time (network policy switched off) leaves no pins behind:
    # the CNI plugin would attach them to new pods
    for name in set(PARTS["policy"][1]) - set(dp.fds):
        prog_path(pin_dir, name).unlink(missing_ok=True)


def pinned_programs(pin_dir: Path) -> list[str]:
    """Names of the programs pinned in pin_dir."""
    if not pin_dir.is_dir():
        return []
    return sorted(p.name[len(PREFIX):] for p in pin_dir.iterdir()
                  if p.name.startswith(PREFIX))


def attach_policy_pinned(ifname: str, pin_dir: Path, netns: str | None = None) -> bool:
    """Attach the pinned network policy programs to a pod's own interface ifname, in the
    pod's namespace netns (a name or a path): ingress rr_pol_to_pod, egress
    rr_pol_from_pod. False, and nothing attached, when they are not pinned (the agent
    runs without network policy)."""
    if not prog_path(pin_dir, POL_TO_POD).exists():
        return False
    fds: list[int] = []
    try:
        fds.append(_obj_get(prog_path(pin_dir, POL_TO_POD)))
        fds.append(_obj_get(prog_path(pin_dir, POL_FROM_POD)))
        attach_tc(ifname, (fds[0], POL_TO_POD), (fds[1], POL_FROM_POD), netns)
        return True
    finally:
        for fd in fds:
            os.close(fd)


def attach_pinned(ifname: str, pin_dir: Path, netns: str | None = None) -> int:
    """Attach the pinned pod programs to ifname (ingress: rr_pod_ingress, egress:
    rr_pod_egress when pinned: the agent pins it with per-packet LB only) as
    direct-action TC filters; returns the ifindex.

    FileNotFoundError (a BpfError) when the ingress program is not pinned; LookupError
    when ifname does not exist."""
    fds: list[int] = []
    try:
        fds.append(_obj_get(prog_path(pin_dir, POD_INGRESS)))
        if prog_path(pin_dir, POD_EGRESS).exists():
            fds.append(_obj_get(prog_path(pin_dir, POD_EGRESS)))
        ifindex = attach_tc(ifname, (fds[0], POD_INGRESS),
                            (fds[1], POD_EGRESS) if len(fds) > 1 else None, netns)
        register_pod_if(pin_dir, ifname, netns)
        return ifindex
    finally:
        for fd in fds:
            os.close(fd)  # the filters hold their own references
