"""This node's pods with the addresses the CNI plugin gave them (pure).

A new pod's addresses reach the API server (status.podIPs) only after its sandbox is up;
the plugin's local records (controller/cni/podrecords.py) hold them from the moment ADD
allocates them. Policy compiled with them guards the pod before its containers start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from controller.cni.podrecords import PodRecord
from controller.model.policy import Pod

DONE_PHASES = ("Succeeded", "Failed")  # such pods hold no address


def with_local_addresses(pods: Iterable[Pod], records: Iterable[PodRecord], node: str
                         ) -> tuple[list[Pod], list[str]]:
    """pods, those of this node with no address in their status given their records'
    addresses (a pod whose sandbox was made again has a record per sandbox until DEL:
    all their addresses); and the keys of the records that name a pod of this node (a
    uid, when both sides have one, must match: a pod made again under the same name is
    another pod). A record naming no known pod matches nothing: its pod is not in the
    view yet, and its policy cannot be known."""
    by_name: dict[tuple[str, str], list[PodRecord]] = {}
    for rec in records:
        by_name.setdefault((rec.namespace, rec.name), []).append(rec)
    out: list[Pod] = []
    matched: list[str] = []
    for pod in pods:
        recs = by_name.get((pod.meta.namespace, pod.meta.name), [])
        recs = [r for r in recs if not (r.uid and pod.meta.uid and r.uid != pod.meta.uid)]
        if not recs or pod.node != node or pod.host_network or pod.phase in DONE_PHASES:
            out.append(pod)
            continue
        matched.extend(r.key for r in recs)
        if pod.ips:
            out.append(pod)
            continue
        ips = tuple(dict.fromkeys(a for r in sorted(recs, key=lambda r: r.key) for a in r.ips))
        out.append(replace(pod, ips=ips))
    return out, sorted(matched)
