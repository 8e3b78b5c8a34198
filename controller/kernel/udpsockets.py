"""Closing connected UDP sockets whose peer is a backend that went away: the port, its
real adapter (sock_diag, in every network namespace of the socket-LB cgroup's
processes) and a fake.

With socket-level LB translating connect(), a connected UDP socket holds the backend's
address, not the service's; no map entry the agent could delete moves it. The real
adapter finds such sockets with a SOCK_DIAG_BY_FAMILY dump (AF_INET and AF_INET6, UDP,
connected ones only) in each network namespace a process of the cgroup lives in, and
destroys each whose peer is one of the given backends (SOCK_DESTROY, as `ss -K` does;
the kernel needs CONFIG_INET_DIAG_DESTROY). The owner's next receive fails with
ECONNABORTED and the socket is left unconnected; a client that connects again is
balanced anew. Cilium closes the same sockets (with bpf_sock_destroy).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Protocol

from controller.desired.sockets import Peer

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
SOCK_DESTROY = 21
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_ESTABLISHED = 1  # a connected UDP socket's state
CLONE_NEWNET = 0x40000000
_HDR = struct.Struct("=IHHII")      # nlmsghdr
_REQ = struct.Struct("=BBBBI")      # inet_diag_req_v2 up to its sockid
_ID_LEN = 48                        # inet_diag_sockid
_MSG = struct.Struct("=BBBB")       # inet_diag_msg up to its sockid


class UdpSocketPort(Protocol):
    def close_connected(self, peers: frozenset[Peer]) -> int:
        """Close every connected UDP socket whose peer is one of peers; how many."""
        ...


class FakeUdpSockets:
    """UdpSocketPort in memory: sockets are handles with a peer."""

    def __init__(self) -> None:
        self.sockets: dict[int, Peer] = {}
        self.aborted: set[int] = set()
        self._next = 1

    def connect(self, peer: Peer) -> int:
        handle, self._next = self._next, self._next + 1
        self.sockets[handle] = peer
        return handle

    def close_connected(self, peers: frozenset[Peer]) -> int:
        hit = {h for h, p in self.sockets.items() if p in peers}
        for h in hit:
            del self.sockets[h]
        self.aborted |= hit
        return len(hit)


def _peer_of(family: int, sockid: bytes) -> Peer:
    dport = struct.unpack_from("!H", sockid, 2)[0]
    raw = sockid[20:36] if family == socket.AF_INET6 else sockid[20:24]
    addr: IPv4Address | IPv6Address = ip_address(raw)
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # a dual-stack socket connected to an IPv4 backend
    return (addr, dport)


def _request(kind: int, flags: int, family: int, sockid: bytes) -> bytes:
    body = _REQ.pack(family, socket.IPPROTO_UDP, 0, 0,
                     1 << TCP_ESTABLISHED if kind == SOCK_DIAG_BY_FAMILY else 0xFFFFFFFF)
    body += sockid
    return _HDR.pack(_HDR.size + len(body), kind, flags, 1, 0) + body


def _messages(nl: socket.socket) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of the answers to one request, through NLMSG_DONE or an ack."""
    while True:
        data = nl.recv(65536)
        off = 0
        while off + _HDR.size <= len(data):
            length, kind, _, _, _ = _HDR.unpack_from(data, off)
            if length < _HDR.size:
                return
            payload = data[off + _HDR.size:off + length]
            off += (length + 3) & ~3
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, os.strerror(code))
                return  # an ack
            yield kind, payload


def close_here(peers: frozenset[Peer]) -> int:
    """Destroy the connected UDP sockets of this thread's network namespace whose peer is
    in peers. A socket gone meanwhile (ENOENT) is not counted."""
    closed = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        for family in (socket.AF_INET, socket.AF_INET6):
            nl.send(_request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, family,
                             bytes(_ID_LEN)))
            victims = [p[_MSG.size:_MSG.size + _ID_LEN] for kind, p in _messages(nl)
                       if kind == SOCK_DIAG_BY_FAMILY
                       and _peer_of(family, p[_MSG.size:_MSG.size + _ID_LEN]) in peers]
            for sockid in victims:
                nl.send(_request(SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK, family, sockid))
                try:
                    for _ in _messages(nl):
                        pass
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
                    continue
                closed += 1
    return closed


def cgroup_pids(cgroup: Path) -> set[int]:
    """The processes of a cgroup v2 directory and of every cgroup below it."""
    pids: set[int] = set()
    for procs in [cgroup / "cgroup.procs", *cgroup.rglob("*/cgroup.procs")]:
        try:
            pids.update(int(x) for x in procs.read_text().split())
        except OSError:
            continue  # a cgroup removed while walking
    return pids


class SockDiagUdpSockets:
    """UdpSocketPort for the processes of one cgroup, each of whose network namespaces is
    searched once (entered from a short-lived thread, so no other thread moves)."""

    def __init__(self, cgroup: Path) -> None:
        self.cgroup = cgroup

    def namespaces(self) -> dict[tuple[int, int], int]:
        """(device, inode) of each network namespace of the cgroup's processes -> a pid
        in it."""
        out: dict[tuple[int, int], int] = {}
        for pid in sorted(cgroup_pids(self.cgroup)):
            try:
                st = os.stat(f"/proc/{pid}/ns/net")
            except OSError:
                continue  # exited meanwhile
            out.setdefault((st.st_dev, st.st_ino), pid)
        return out

    def close_connected(self, peers: frozenset[Peer]) -> int:
        if not peers:
            return 0
        total = 0
        for pid in self.namespaces().values():
            total += _in_netns_of(pid, lambda: close_here(peers))
        return total


def _in_netns_of(pid: int, fn: Callable[[], int]) -> int:
    """fn's result, run in a new thread that entered pid's network namespace; 0 if the
    process left. An error of fn is raised here."""
    result: list[int] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        except OSError:
            result.append(0)
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into the network namespace of pid {pid}")
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=body, name=f"udp-sockets-{pid}", daemon=True)
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0] if result else 0
