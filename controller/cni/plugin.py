"""`rackroute-cni`: the executable a container runtime runs (CNI spec 1.0).

The runtime passes the command and the container in CNI_* environment variables and
the network config as JSON on stdin. ADD prints the result JSON; DEL and CHECK print
nothing on success; VERSION prints the supported versions. Every failure prints the
spec's error JSON on stdout and exits non-zero. In a conflist it is the first plugin
(others, such as portmap for hostPorts, are chained after it: `netconf_for`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Mapping
from typing import IO, Any

from controller.cni import netsetup, podrecords
from controller.cni.ipam import (
    AlreadyAllocated,
    IpamStore,
    LockTimeout,
    PoolExhausted,
    RequestRefused,
)
from controller.cni.netconf import Env, NetConf, parse_env, parse_netconf
from controller.cni.spec import (
    CHECK_MIN_VERSION,
    ERR_ALREADY_ADDED,
    ERR_BPF_ATTACH,
    ERR_CHECK_FAILED,
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_IO,
    ERR_IP_REFUSED,
    ERR_NETWORK_SETUP,
    ERR_NOT_AVAILABLE,
    ERR_POLICY_NOT_READY,
    ERR_POOL_EXHAUSTED,
    ERR_TRY_AGAIN_LATER,
    ERR_UNKNOWN_CONTAINER,
    GC_MIN_VERSION,
    SPEC_VERSION,
    SUPPORTED_VERSIONS,
    CniError,
    Interface,
    IPConfig,
    Result,
    Route,
    version_json,
    version_tuple,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def store_for(conf: NetConf) -> IpamStore:
    return IpamStore(conf.data_dir, conf.name, conf.pod_cidrs)


def _store_call(what: str, fn: Any, *args: Any) -> Any:
    """Run an IPAM operation, mapping its failures to CNI error codes."""
    try:
        return fn(*args)
    except AlreadyAllocated as e:
        raise CniError(ERR_ALREADY_ADDED, "container already added", str(e)) from e
    except PoolExhausted as e:
        raise CniError(ERR_POOL_EXHAUSTED, "pod address pool exhausted", str(e)) from e
    except RequestRefused as e:
        raise CniError(ERR_IP_REFUSED, "requested IP refused", str(e)) from e
    except LockTimeout as e:
        raise CniError(ERR_TRY_AGAIN_LATER, "address store busy", str(e)) from e
    except OSError as e:
        raise CniError(ERR_IO, f"address store {what} failed", str(e)) from e


def build_result(conf: NetConf, netns: str, veth: netsetup.Veth,
                 addrs: list[IPAddress]) -> Result:
    ifaces = (Interface(veth.host, veth.host_mac), Interface(veth.pod, veth.pod_mac, netns))
    ips = tuple(IPConfig(ipaddress.ip_interface(f"{a}/{netsetup.plen(a)}"),
                         netsetup.gateway(a.version), 1) for a in addrs)
    routes = tuple(Route(ipaddress.ip_network("0.0.0.0/0" if a.version == 4 else "::/0"),
                         netsetup.gateway(a.version)) for a in addrs)
    return Result(conf.cni_version, ifaces, ips, routes, conf.dns)


def requested_ips(env: Env) -> list[IPAddress]:
    """CNI_ARGS `IP=a[,b]`: the addresses the runtime asks for (one per family)."""
    out: list[IPAddress] = []
    for key, value in env.args:
        if key != "IP":
            continue
        for part in (p.strip() for p in value.split(",")):
            try:
                out.append(ipaddress.ip_address(part))
            except ValueError:
                raise CniError(ERR_INVALID_ENV, "invalid environment variable CNI_ARGS: "
                               f"IP={part!r} is not an IP address") from None
    return out


def await_policy(env: Env, conf: NetConf, addrs: list[IPAddress]) -> None:
    """Under network policy, hand the agent the new pod's addresses and wait until it has
    programmed the pod's policy (controller/cni/podrecords.py), so the containers never
    run unguarded; a refusal (code 106) after bpf.policyWait seconds without it. A pod
    the runtime does not name (no K8S_POD_NAMESPACE / K8S_POD_NAME) is no pod of the
    API server's: no policy selects it, nothing to wait for."""
    args = dict(env.args)
    namespace, name = args.get("K8S_POD_NAMESPACE", ""), args.get("K8S_POD_NAME", "")
    if not namespace or not name or conf.policy_wait <= 0:
        return
    key = podrecords.write_record(conf.data_dir, env.container_id, env.ifname, namespace,
                                  name, args.get("K8S_POD_UID", ""), addrs)
    if not podrecords.wait_ready(conf.data_dir, key, conf.policy_wait):
        raise CniError(ERR_POLICY_NOT_READY,
                       f"network policy of pod {namespace}/{name} not programmed",
                       f"the agent did not acknowledge {key} in "
                       f"{podrecords.record_dir(conf.data_dir)} within bpf.policyWait "
                       f"({conf.policy_wait:g} s): is the agent running with "
                       "--network-policy and does it see the pod?")


def cmd_add(env: Env, conf: NetConf) -> Result:
    if not netsetup.netns_exists(env.netns):
        raise CniError(ERR_INVALID_ENV, "invalid environment variable CNI_NETNS: "
                       f"{env.netns} does not exist")
    store = store_for(conf)
    addrs: list[IPAddress] = _store_call("allocate", store.allocate, env.container_id,
                                         env.ifname, requested_ips(env))
    host = netsetup.host_ifname(env.container_id, env.ifname)
    try:
        try:
            veth = netsetup.create(env.container_id, env.ifname, env.netns, conf.mtu, addrs)
        except netsetup.SetupError as e:
            raise CniError(ERR_NETWORK_SETUP, "pod network setup failed", str(e)) from e
        if conf.pin_dir is not None:
            from controller.cni import bpfattach

            try:
                guarded = bpfattach.attach(host, conf.pin_dir, env.netns, env.ifname,
                                           conf.pod_programs)
            except bpfattach.BpfAttachError as e:
                raise CniError(ERR_BPF_ATTACH, "attaching the pod datapath failed",
                               str(e)) from e
            if guarded:
                await_policy(env, conf, addrs)
    except BaseException:
        try:
            netsetup.delete_host_veth(host)
        finally:
            try:
                podrecords.remove_record(conf.data_dir, env.container_id, env.ifname)
            finally:
                store.release(env.container_id, env.ifname)
        raise
    return build_result(conf, env.netns, veth, addrs)


def cmd_del(env: Env, conf: NetConf) -> None:
    host = netsetup.host_ifname(env.container_id, env.ifname)
    if conf.pin_dir is not None:
        from bpf.loader import unregister_pod_if

        # before the veth goes, so no entry names a missing interface; best effort (the
        # agent prunes what is left): DEL must not fail for the datapath's sake
        with contextlib.suppress(Exception):
            unregister_pod_if(conf.pin_dir, host)
    with contextlib.suppress(OSError):
        podrecords.remove_record(conf.data_dir, env.container_id, env.ifname)
    try:
        netsetup.delete_host_veth(host)
    except Exception as e:
        raise CniError(ERR_NETWORK_SETUP, f"removing {host} failed", str(e)) from e
    _store_call("release", store_for(conf).release, env.container_id, env.ifname)


def cmd_check(env: Env, conf: NetConf) -> None:
    if version_tuple(conf.cni_version) < version_tuple(CHECK_MIN_VERSION):
        raise CniError(ERR_INCOMPATIBLE_VERSION,
                       f"CHECK is not defined for cniVersion {conf.cni_version}",
                       f"CHECK needs cniVersion {CHECK_MIN_VERSION} or later")
    prev = conf.prev_result
    assert prev is not None  # parse_netconf(need_prev=True)
    host = netsetup.host_ifname(env.container_id, env.ifname)
    held = _store_call("lookup", store_for(conf).lookup, env.container_id, env.ifname)

    def fail(msg: str) -> CniError:
        return CniError(ERR_CHECK_FAILED, "pod network check failed", msg)

    if not held:
        raise fail(f"no address is allocated to {env.container_id}/{env.ifname}")
    pod_idx = next((i for i, it in enumerate(prev.interfaces)
                    if it.name == env.ifname and it.sandbox), None)
    prev_addrs = {ip.address.ip for ip in prev.ips
                  if ip.interface is None or ip.interface == pod_idx}
    if prev_addrs != set(held):
        raise fail(f"prevResult lists {sorted(map(str, prev_addrs))}, the address store "
                   f"holds {sorted(map(str, held))}")
    host_mac = next((it.mac for it in prev.interfaces if it.name == host), None)
    pod_mac = prev.interfaces[pod_idx].mac if pod_idx is not None else None
    try:
        netsetup.check_host(host, held, host_mac)
        netsetup.check_pod(env.netns, env.ifname, conf.mtu, held, pod_mac,
                           [(r.dst, r.gw) for r in prev.routes])
    except netsetup.NetnsGone as e:
        raise CniError(ERR_UNKNOWN_CONTAINER, "container network namespace is gone",
                       str(e)) from e
    except netsetup.CheckFailed as e:
        raise fail(str(e)) from e
    if conf.pin_dir is not None and conf.pod_programs:
        from controller.cni import bpfattach

        missing = bpfattach.check(host, conf.pin_dir)
        if missing:
            raise fail(missing)


def cmd_gc(conf: NetConf) -> list[str]:
    """GC (spec 1.1.0): release what this network holds for attachments the runtime no
    longer knows (leaked by a DEL that never came): their addresses, their host veths
    (named from the attachment, so no other interface is touched), their rr_pod_ifs
    entries and their pod records. Returns what was released, one line each."""
    if version_tuple(conf.cni_version) < version_tuple(GC_MIN_VERSION):
        raise CniError(ERR_INCOMPATIBLE_VERSION,
                       f"GC is not defined for cniVersion {conf.cni_version}",
                       f"GC needs cniVersion {GC_MIN_VERSION} or later")
    if conf.valid_attachments is None:
        raise CniError(ERR_INVALID_CONFIG, 'invalid network config field '
                       '"cni.dev/valid-attachments": missing (GC needs the valid attachments)')
    valid = conf.valid_attachments
    store = store_for(conf)
    held = _store_call("allocations", store.allocations)
    stale = sorted({(o.container_id, o.ifname) for o in held.values()
                    if o.network == conf.name} - valid)
    done: list[str] = []
    for cid, ifname in stale:
        host = netsetup.host_ifname(cid, ifname)
        if conf.pin_dir is not None:
            from bpf.loader import unregister_pod_if

            with contextlib.suppress(Exception):
                unregister_pod_if(conf.pin_dir, host)
        with contextlib.suppress(Exception):
            netsetup.delete_host_veth(host)
        podrecords.remove_record(conf.data_dir, cid, ifname)
        addrs = _store_call("release", store.release, cid, ifname)
        done.append(f"{cid}/{ifname}: released {', '.join(map(str, addrs))}, {host} removed")
    keep = {podrecords.record_key(c, i) for c, i in valid}
    for rec in podrecords.PodRecordDir(conf.data_dir).records()[0]:
        if rec.key not in keep:  # a record whose addresses are gone already
            podrecords.remove_record(conf.data_dir, rec.container_id, rec.ifname)
    return done


def cmd_status(conf: NetConf) -> None:
    """STATUS (spec 1.1.0): code 50 while ADD cannot succeed: the agent has not pinned
    the datapath programs the plugin attaches (it is starting, or gone)."""
    if version_tuple(conf.cni_version) < version_tuple(GC_MIN_VERSION):
        raise CniError(ERR_INCOMPATIBLE_VERSION,
                       f"STATUS is not defined for cniVersion {conf.cni_version}",
                       f"STATUS needs cniVersion {GC_MIN_VERSION} or later")
    if conf.pin_dir is not None:
        from bpf.progpin import POD_INGRESS, prog_path

        if not prog_path(conf.pin_dir, POD_INGRESS).exists():
            raise CniError(ERR_NOT_AVAILABLE, "the pod datapath is not loaded",
                           f"no {POD_INGRESS} pinned in {conf.pin_dir}: is the agent "
                           "running with --datapath?")


def netconf_for(command: str, raw: object) -> NetConf:
    """The network config for command, by the spec's rules for a conflist's plugins.
    rackroute-cni creates the pod's interface, so it is the first plugin: its ADD gets no
    prevResult (one means a plugin ran before it, whose result it would drop: code 7)
    and its result is what the next plugin (portmap) gets. CHECK gets the chain's final
    result and checks the pod against it; DEL gets it too but needs nothing from it, so
    it is not parsed: a result a later plugin shaped never makes DEL fail."""
    if command == "DEL" and isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k != "prevResult"}
    conf = parse_netconf(raw, need_prev=command == "CHECK")
    if command == "ADD" and conf.prev_result is not None:
        raise CniError(ERR_INVALID_CONFIG, 'invalid network config field "prevResult": '
                       "rackroute-cni creates the pod's interface and must be the first "
                       "plugin of the conflist", "chain plugins such as portmap after it")
    return conf


def _read_stdin(stdin: IO[str]) -> str:
    try:
        return stdin.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CniError(ERR_IO, "reading the network config from stdin failed", str(e)) from e


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise CniError(ERR_DECODE, "network config is not valid JSON", str(e)) from e


def run(environ: Mapping[str, str], stdin: IO[str], stdout: IO[str]) -> int:
    """One plugin invocation; returns the exit status."""
    reply_version = SPEC_VERSION
    try:
        env = parse_env(environ)
        text = _read_stdin(stdin)
        if env.command == "VERSION":
            raw = _decode(text) if text.strip() else {}
            req = raw.get("cniVersion") if isinstance(raw, dict) else None
            json.dump(version_json(req if isinstance(req, str) else None), stdout)
            stdout.write("\n")
            return 0
        raw = _decode(text)
        if isinstance(raw, dict) and raw.get("cniVersion") in SUPPORTED_VERSIONS:
            reply_version = str(raw["cniVersion"])
        conf = netconf_for(env.command, raw)
        if env.command == "ADD":
            result = cmd_add(env, conf)
            json.dump(result.to_json(), stdout, indent=1)
            stdout.write("\n")
        elif env.command == "DEL":
            cmd_del(env, conf)
        elif env.command == "GC":
            for line in cmd_gc(conf):
                print(f"event=cni_gc {line}", file=sys.stderr)
        elif env.command == "STATUS":
            cmd_status(conf)
        else:
            cmd_check(env, conf)
        return 0
    except CniError as e:
        err = e
    except Exception as e:  # never a traceback instead of the spec's error JSON
        err = CniError(999, f"internal error: {type(e).__name__}", str(e))
    json.dump(err.to_json(reply_version), stdout)
    stdout.write("\n")
    print(f"event=cni_error code={err.code} msg={err.msg!r} details={err.details!r}",
          file=sys.stderr)
    return 1


def main() -> None:
    sys.exit(run(os.environ, sys.stdin, sys.stdout))
