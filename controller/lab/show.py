"""What `make lab` prints: sessions, the ToR's routes (both families in a dual-stack lab),
a pod ping per family, a curl per LB IP, a NetworkPolicy's verdict and the connections it
allows and refuses."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from controller.lab.netns import LabError, Netns, run_cmd
from controller.lab.runner import PIN_ROOT, LabRunner
from controller.lab.topology import POD_PORT, LabPod, Topology, load_topology
from controller.status import read_nodes, read_operator


def _manifests(r: LabRunner) -> Path:
    if r.state is None:
        raise LabError("the lab is not up (rackroute lab up)")
    return Path(r.state.manifests)


def tor_vtysh(r: LabRunner, cmd: str) -> str:
    assert r.state is not None
    return run_cmd(["vtysh", "--vty_socket", r.state.frr_dir, "-c", cmd]).stdout


def lb_targets(mdir: Path) -> list[tuple[str, str, int, str]]:
    """(service, ip, port, protocol) for every allocated LoadBalancer IP."""
    from controller.sources.files import ManifestDir

    snap = ManifestDir(mdir).load()
    out = []
    for key, ips in sorted(read_operator(mdir).ingress.items()):
        svc = snap.services.get(key)
        if svc is None:
            continue
        for ip in ips:
            for p in svc.ports:
                out.append((key, str(ip), p.port, p.protocol))
    return out


def url(ip: str, port: int) -> str:
    """http://ip:port/, the address in brackets if it is IPv6."""
    return f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"


def tor_bgp_routes(r: LabRunner) -> str:
    """The ToR's BGP routes of both families (vtysh's text)."""
    return tor_vtysh(r, "show ip route bgp") + tor_vtysh(r, "show ipv6 route bgp")


def wait_ready(r: LabRunner, timeout: float = 90.0) -> bool:
    """Wait until every session is Established (and its BFD session Up, where asked) and
    the ToR's kernel has every pod CIDR."""
    mdir = _manifests(r)
    topo = load_topology(mdir)
    from controller.sources.files import ManifestDir

    net = ManifestDir(mdir).load().network_config
    tunnel_only = net is not None and net.routing_mode == "tunnel"  # pod CIDRs not in BGP
    want = set() if tunnel_only else {
        str(c) for cs in read_operator(mdir).pod_cidrs.values() for c in cs}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        docs = read_nodes(mdir)
        peers = [p for d in docs.values() for i in d.get("instances", [])
                 for p in i.get("peers", [])]
        states = [p["state"] for p in peers]
        # with BFD asked for, its sessions too (the status shows the responder's view)
        states += ["established" if p["bfd"]["state"] == "up" else p["bfd"]["state"]
                   for p in peers if p.get("bfd")]
        routes = tor_bgp_routes(r)
        if (len(docs) == len(topo.nodes) and states and all(s == "established" for s in states)
                and all(c in routes for c in want)):
            return True
        time.sleep(0.5)
    print(f"lab: not ready after {timeout:.0f}s (see the logs in {r.dir})", file=sys.stderr)
    return False


def _section(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def show(r: LabRunner) -> int:
    mdir = _manifests(r)
    topo = load_topology(mdir)
    rc = 0
    _section("The cluster at a glance (rackroute status)")
    subprocess.run([sys.executable, "-m", "controller.cli", "status", "--manifests",
                    str(mdir)], check=False)
    _section("BGP sessions (rackroute bgp peers)")
    subprocess.run([sys.executable, "-m", "controller.cli", "bgp", "peers", "--manifests",
                    str(mdir)], check=False)
    _section("The ToR's routes (vtysh: show ip route bgp)")
    print(tor_vtysh(r, "show ip route bgp").rstrip())
    if topo.dual_stack:
        _section("The ToR's IPv6 routes (vtysh: show ipv6 route bgp)")
        print(tor_vtysh(r, "show ipv6 route bgp").rstrip())
    if topo.bfd:
        _section("BFD with the nodes' responders, at the ToR (vtysh: show bfd peers brief)")
        print(tor_vtysh(r, "show bfd peers brief").rstrip())
    first = next((p for p in topo.pods if p.node == topo.nodes[0].name), None)
    last = next((p for p in topo.pods if p.node == topo.nodes[-1].name), None)
    if first and last:
        for dst in (last.ip, last.ip6) if first.ip6 and last.ip6 else (last.ip,):
            _section(f"Ping from pod {first.name} ({first.node}) to pod {last.name} "
                     f"({last.node}) at {dst}")
            res = Netns(topo.pod_ns(first.name)).run(
                ["ping", "-c", "3", "-i", "0.2", "-W", "1", dst], check=False)
            print(res.stdout.rstrip() or res.stderr.rstrip())
            rc |= res.returncode
    _section("From the external client to every LoadBalancer IP")
    client = Netns(topo.client_ns)
    for svc, ip, port, proto in lb_targets(mdir):
        if proto != "TCP":
            print(f"{svc:20} {ip}:{port}/{proto}  (not HTTP; skipped)")
            continue
        res = client.run(["curl", "-sS", "-m", "3", url(ip, port)], check=False)
        answer = res.stdout.strip() or res.stderr.strip()
        where = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        print(f"{svc:20} {where:<22} -> {answer}")
    rc |= show_policy(topo, mdir, client)
    checks = health_check_ports(mdir)
    if checks:
        _section("Health check node ports, asked from the external client")
        for svc, port in checks:
            for n in topo.nodes:
                res = client.run(["curl", "-sS", "-m", "3", "-w", " (HTTP %{http_code})",
                                  f"http://{n.address}:{port}/"], check=False)
                print(f"{svc:20} {n.name}:{port} -> {res.stdout.strip() or res.stderr.strip()}")
    for n in topo.nodes:
        _section(f"The flows {n.name}'s datapath holds (rackroute service conntrack)")
        subprocess.run([sys.executable, "-m", "controller.cli", "service", "conntrack",
                        "--pin-root", str(PIN_ROOT), "--instance", n.name], check=False)
    return rc


def health_check_ports(mdir: Path) -> list[tuple[str, int]]:
    """(namespace/name, healthCheckNodePort) of the manifests' Local LoadBalancers."""
    from controller.model.k8s import Service
    from controller.model.parse import parse_object

    out: list[tuple[str, int]] = []
    for f in sorted(mdir.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "Service":
                continue
            svc = parse_object(doc).obj
            if isinstance(svc, Service) and svc.health_check_node_port:
                out.append((svc.key, svc.health_check_node_port))
    return out


def policy_demo(topo: Topology, mdir: Path) -> tuple[LabPod, LabPod] | None:
    """(a lab pod some NetworkPolicy isolates for ingress, a lab pod it does not allow
    in on the pod port), from the manifests; None when there is no such pair."""
    from controller.desired.policy import compile_policies
    from controller.sources.files import ManifestDir

    snap = ManifestDir(mdir).load()
    guarded: dict[str, tuple[str, ...]] = {}
    for n in topo.nodes:
        plan = compile_policies(snap.network_policies.values(), snap.pods.values(),
                                snap.namespaces, n.name)
        guarded.update({k.split("/", 1)[1]: tuple(str(e.prefix) for e in ep.ingress)
                        for k, ep in plan.endpoints.items() if ep.ingress is not None})
    import ipaddress

    for dst in topo.pods:
        if dst.name not in guarded:
            continue
        for src in topo.pods:
            if src.name != dst.name and not any(
                    ipaddress.ip_address(src.ip) in ipaddress.ip_network(p)
                    for p in guarded[dst.name]):
                return dst, src
    return None


def show_policy(topo: Topology, mdir: Path, client: Netns) -> int:
    """A NetworkPolicy of the manifests at work: what `rackroute policy --check` says of
    a refused pod, and the connections tried from that pod and from the external client
    (0 when both went as the policy says)."""
    pair = policy_demo(topo, mdir)
    if pair is None:
        return 0
    dst, src = pair
    _section(f"NetworkPolicy: pod {src.name} to pod {dst.name} (rackroute policy --check)")
    subprocess.run([sys.executable, "-m", "controller.cli", "policy", "--manifests",
                    str(mdir), "--check", f"{src.namespace}/{src.name}",
                    f"{dst.namespace}/{dst.name}", f"tcp/{POD_PORT}"], check=False)
    url = f"http://{dst.ip}:{POD_PORT}/"
    from_pod = Netns(topo.pod_ns(src.name)).run(["curl", "-sS", "-m", "2", url], check=False)
    from_client = client.run(["curl", "-sS", "-m", "3", url], check=False)
    refused = from_pod.returncode != 0
    who = (f"from pod {src.name}", "from the external client")
    width = max(map(len, who))
    print(f"{who[0]:{width}}  {url} -> "
          f"{'refused (no answer)' if refused else from_pod.stdout.strip()}")
    print(f"{who[1]:{width}}  {url} -> "
          f"{from_client.stdout.strip() or from_client.stderr.strip()}")
    _section(f"What {dst.node}'s policy maps hold (rackroute policy-maps)")
    subprocess.run([sys.executable, "-m", "controller.cli", "policy-maps", "--pin-root",
                    str(PIN_ROOT), "--instance", dst.node], check=False)
    return 0 if refused and from_client.returncode == 0 else 1
