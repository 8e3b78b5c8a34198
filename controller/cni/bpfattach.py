"""Attach the agent's pinned pod programs to a new pod's host veth, and check them.

The plugin never compiles: the agent loads the datapath and pins the programs under
`bpf.pinDir` (bpf.progpin.pin_programs), and, when the agent pinned them, the network
policy programs on the pod's own interface (in its namespace: every path into the pod
crosses it); the plugin then waits for the agent to program the new pod's policy
(controller/cni/podrecords.py). At DEL the filters go away with the veth;
the plugin removes the veth's rr_pod_ifs entry first (bpf.loader.unregister_pod_if).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INGRESS_PARENT = 0xFFFFFFF2
EGRESS_PARENT = 0xFFFFFFF3


class BpfAttachError(Exception):
    """The programs could not be opened from their pins or attached."""


def attach(host_ifname: str, pin_dir: Path, netns: str | None = None,
           pod_ifname: str | None = None, pod_programs: bool = True) -> bool:
    """The pod programs on the host veth (unless pod_programs is False: the agent runs
    without per-packet LB and with kernel host routing, and leaves the veths bare); with
    netns and pod_ifname, the network policy programs on the pod's own interface too,
    when the agent pinned them. True when it attached those (the agent enforces network
    policy). Either way the agent must have pinned its pod programs (it runs): until
    then BpfAttachError, and the runtime retries."""
    from bpf.progpin import attach_pinned, attach_policy_pinned

    try:
        if pod_programs:
            attach_pinned(host_ifname, pin_dir)
        else:
            _require_datapath(pin_dir)
        if netns is not None and pod_ifname is not None:
            return attach_policy_pinned(pod_ifname, pin_dir, netns)
        return False
    except (OSError, LookupError, ValueError) as e:
        raise BpfAttachError(f"attaching {pin_dir} programs to {host_ifname}: {e}") from e
    except Exception as e:  # pyroute2's NetlinkError and friends
        raise BpfAttachError(f"attaching {pin_dir} programs to {host_ifname}: {e}") from e


def _require_datapath(pin_dir: Path) -> None:
    """FileNotFoundError unless the agent has pinned its datapath in pin_dir (the pod
    ingress program is pinned whenever the datapath is loaded)."""
    from bpf.progpin import POD_INGRESS, prog_path

    path = prog_path(pin_dir, POD_INGRESS)
    if not path.exists():
        raise FileNotFoundError(f"{path}: the agent has not pinned its datapath")


def _bpf_filter_names(ipr: Any, index: int, parent: int) -> list[str]:
    names = []
    for f in ipr.get_filters(index=index, parent=parent):
        if f.get_attr("TCA_KIND") != "bpf":
            continue
        opts = f.get_attr("TCA_OPTIONS")
        name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
        names.append(str(name or ""))
    return names


def attached(host_ifname: str) -> tuple[list[str], list[str]]:
    """(ingress, egress) bpf filter names on host_ifname."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=host_ifname)
        if not idx:
            return [], []
        return (_bpf_filter_names(ipr, idx[0], INGRESS_PARENT),
                _bpf_filter_names(ipr, idx[0], EGRESS_PARENT))


def check(host_ifname: str, pin_dir: Path) -> str | None:
    """None when the pod programs pinned in pin_dir are attached (the egress one is
    pinned with per-packet LB only), else what is missing."""
    from bpf.loader import POD_EGRESS
    from bpf.progpin import POD_INGRESS, prog_path

    ingress, egress = attached(host_ifname)
    wanted = [(POD_INGRESS, ingress, "ingress")]
    if prog_path(pin_dir, POD_EGRESS).exists():
        wanted.append((POD_EGRESS, egress, "egress"))
    for want, have, where in wanted:
        if not any(n.startswith(want) for n in have):
            return f"{want} is not attached to {host_ifname} {where} (found {have or 'none'})"
    return None
