"""The BGP reconciler: keeps each BGP instance's speaker equal to the desired state.

Per pass: resolve this node's instances and peers (BGPClusterConfig, BGPPeerConfig,
overrides, secrets), plan the paths, hold back every path whose datapath is not ready
yet (the readiness gate), then per instance: start the speaker, set peers, set paths.
Instances no longer desired withdraw their paths and stop. Level-triggered: each pass
recomputes everything. `set_paths` diffs against the adapter's memory, so on the periodic
resync pass (`ctx.resync`) the reconciler also asks each speaker to compare with what its
daemon really announces (`Speaker.resync`): a path removed behind its back comes back,
with one `bgp_drift_repaired` line per prefix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bgp.speaker import Speaker, logfmt
from bgp.types import Feature, GlobalConfig, IPAddress, IPNetwork, Path
from controller.desired.advertise import (
    NodeDrain,
    NodePlan,
    PlanContext,
    merge_paths,
    plan_node,
    shared_plan_problems,
)
from controller.desired.bgpconfig import NodeBGP, ResolvedPeer, resolve_node
from controller.desired.podcidr import node_pod_cidrs
from controller.model.crds import Timers
from controller.reconcile.loop import PassContext

log = logging.getLogger("rackroute.bgp")
DEFAULT_CONNECT_RETRY = Timers().connect_retry  # what a BGPPeerConfig that sets none gets

SpeakerFactory = Callable[[str], Speaker]  # instance name -> a new, unstarted speaker


def timer_problems(peers: Iterable[ResolvedPeer], features: frozenset[Feature]) -> list[str]:
    """Timers a BGPPeerConfig sets that the speaker cannot apply (ExaBGP: keepalives every
    hold time / 3, its own connect retry): said, not silently replaced."""
    out: list[str] = []
    for rp in peers:
        s, where = rp.spec, f"{rp.config_ref or 'BGPPeerConfig'}: spec.timers"
        if Feature.KEEPALIVE not in features and s.hold_time and s.keepalive != s.hold_time // 3:
            out.append(f"{where}.keepAliveTimeSeconds {s.keepalive}: this speaker sends "
                       f"keepalives every holdTimeSeconds / 3 ({s.hold_time // 3} s) to "
                       f"peer {rp.instance}/{rp.name}")
        if Feature.CONNECT_RETRY not in features and s.connect_retry != DEFAULT_CONNECT_RETRY:
            out.append(f"{where}.connectRetryTimeSeconds {s.connect_retry}: not applied by "
                       f"this speaker (it retries on its own schedule) to peer "
                       f"{rp.instance}/{rp.name}")
    return out


@dataclass
class InstanceState:
    """A running instance: its speaker, its config, and what is held at the gate."""

    speaker: Speaker
    config: GlobalConfig
    held: frozenset[IPNetwork] = frozenset()


@dataclass
class BGPView:
    """The last pass's result, for status and the CLI."""

    bgp: NodeBGP | None = None
    plan: NodePlan | None = None
    held: dict[str, frozenset[IPNetwork]] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # beyond the config's: what the speakers cannot do


class BGPReconciler:
    """Peers first, then paths, for every BGP instance of this node."""

    name = "bgp"

    def __init__(self, factory: SpeakerFactory) -> None:
        self.factory = factory
        self.instances: dict[str, InstanceState] = {}
        self.view = BGPView()
        self._problems: set[str] = set()
        self._drain = NodeDrain()
        self._lock = threading.Lock()

    def reconcile(self, ctx: PassContext) -> None:
        snap = ctx.snap
        node = snap.nodes.get(ctx.node)
        if node is None:
            self._report({f"Node {ctx.node}: not found in the manifests; no BGP instance runs"})
            self._remove_all()
            return
        nb = resolve_node(snap, node)
        plan = plan_node(PlanContext.of(snap), nb, node_pod_cidrs(snap, ctx.node))
        self._log_drain(plan.drain)
        extra: list[str] = []
        shared = shared_plan_problems(plan, nb)
        held: dict[str, frozenset[IPNetwork]] = {}
        with self._lock:
            for inst in nb.instances:
                try:
                    held[inst.name] = self._apply_instance(
                        inst.name, inst.global_config, nb, plan, ctx, extra,
                        shared.get(inst.name)
                    )
                except Exception as e:  # one instance failing leaves the others working
                    ctx.errors[f"bgp/{inst.name}"] = repr(e)
                    log.error(logfmt("bgp_instance_error", instance=inst.name, error=repr(e)))
            for name in sorted(set(self.instances) - {i.name for i in nb.instances}):
                self._remove(name)
            self.view = BGPView(nb, plan, held, tuple(extra))
        self._report({p.message for p in nb.problems} | set(extra))

    def _apply_instance(
        self, name: str, config: GlobalConfig, nb: NodeBGP, plan: NodePlan, ctx: PassContext,
        problems: list[str], shared: str | None = None,
    ) -> frozenset[IPNetwork]:
        """Peers and paths of one instance. `shared`: its peers were planned different
        paths (shared_plan_problems): each gets its own where the speaker can (per-peer
        exports), else they all get the union and `shared` says so."""
        st = self.instances.get(name)
        if st is not None and st.config != config:
            log.info(
                logfmt(
                    "bgp_instance_restart",
                    instance=name,
                    asn=config.asn,
                    router_id=config.router_id,
                    port=config.listen_port,
                )
            )
            self._remove(name)
            st = None
        if st is None:
            sp = self.factory(name)
            sp.start(config)
            st = self.instances[name] = InstanceState(sp, config)
            log.info(
                logfmt(
                    "bgp_instance_start",
                    instance=name,
                    asn=config.asn,
                    router_id=config.router_id,
                    port=config.listen_port,
                )
            )
        inst = next(i for i in nb.instances if i.name == name)
        problems += timer_problems(inst.peers, st.speaker.features)
        peers = [p.spec for p in inst.peers]
        if Feature.DYNAMIC_PEER_ASN not in st.speaker.features:
            for rp in inst.peers:
                if rp.spec.peer_asn == 0:
                    problems.append(
                        f"BGPClusterConfig spec.bgpInstances[{name}].peers[{rp.name}].peerASN: "
                        "0 (take the ASN the peer's OPEN names) is more than this speaker "
                        "can do (ExaBGP can: --speaker exabgp); give the peer's ASN. Peer "
                        "not configured")
            peers = [s for s in peers if s.peer_asn != 0]
        pdiff = st.speaker.set_peers(peers)
        for verb, addrs in (
            ("add", pdiff.added),
            ("update", pdiff.updated),
            ("remove", pdiff.removed),
        ):
            for a in addrs:
                log.info(logfmt(f"bgp_peer_{verb}", instance=name, peer=a))
        wanted = merge_paths(p for pp in plan.peers if pp.instance == name for p in pp.paths)
        ready = {k: p for k, p in wanted.items() if ctx.gate.ready(k)}
        held = frozenset(wanted) - frozenset(ready)
        if held != st.held:
            for k in sorted(held - st.held, key=str):
                log.info(
                    logfmt(
                        "bgp_path_held",
                        instance=name,
                        prefix=k,
                        reason="datapath not programmed yet",
                    )
                )
            st.held = held
        exports: dict[IPAddress, list[Path]] | None = None
        if shared is not None and Feature.PER_PEER_EXPORT in st.speaker.features:
            exports = {pp.address: [p for p in pp.paths if p.prefix in ready]
                       for pp in plan.peers if pp.instance == name}
        elif shared is not None:
            problems.append(shared)
        diff = st.speaker.set_paths(ready.values(), exports)
        for p in diff.withdraw:
            log.info(logfmt("bgp_path_withdraw", instance=name, prefix=p.prefix))
        for p in diff.announce:
            log.info(
                logfmt(
                    "bgp_path_announce",
                    instance=name,
                    prefix=p.prefix,
                    communities=",".join(sorted(p.communities)) or "-",
                    large=",".join(sorted(p.large_communities)) or "-",
                    local_pref=p.local_pref if p.local_pref is not None else "-",
                )
            )
        if ctx.resync:
            drift = st.speaker.resync()
            for action, paths in (("announce", drift.announce), ("withdraw", drift.withdraw)):
                for p in paths:
                    log.warning(
                        logfmt("bgp_drift_repaired", instance=name, prefix=p.prefix, action=action)
                    )
        return held

    def _log_drain(self, drain: NodeDrain) -> None:
        """One line each time the Node's drain label or annotation changes what the node
        advertises (and once at start when it is drained already)."""
        if drain == self._drain:
            return
        log.info(logfmt("bgp_node_drain", exclude_lb=drain.exclude_lb,
                        graceful_shutdown=drain.graceful_shutdown, mode=drain.describe()))
        self._drain = drain

    def _report(self, problems: set[str]) -> None:
        for m in sorted(problems - self._problems):
            log.warning(logfmt("bgp_config_problem", msg=m))
        for m in sorted(self._problems - problems):
            log.info(logfmt("bgp_config_problem_resolved", msg=m))
        self._problems = problems

    def _remove(self, name: str) -> None:
        st = self.instances.pop(name, None)
        if st is None:
            return
        log.info(logfmt("bgp_instance_stop", instance=name))
        try:
            st.speaker.set_paths(())
        finally:
            st.speaker.stop()

    def _remove_all(self) -> None:
        with self._lock:
            for name in sorted(self.instances):
                self._remove(name)
            self.view = BGPView()

    def speakers(self) -> dict[str, Speaker]:
        with self._lock:
            return {k: v.speaker for k, v in self.instances.items()}

    def close(self) -> None:
        """Stop the speakers without withdrawing: graceful restart keeps the routes."""
        with self._lock:
            for st in self.instances.values():
                st.speaker.stop()
            self.instances.clear()
