"""The BFD responder process: single-hop and multihop BFD sessions (RFC 5880 / 5881 /
5883) with the node's BGP peers, run apart from the agent so that an agent restart never
flaps them.

`python -m bgp.bfd_daemon --dir DIR` reads the sessions to run from `DIR/sessions.json`
(written by the agent, bgp/bfd_port.py):

    {"sessions": [{"peer": "10.0.0.1", "minRxMs": 300, "minTxMs": 300, "multiplier": 3},
                  {"peer": "10.9.0.1", "hops": 2, "local": "10.9.0.7"}]}

and writes what they are to `DIR/state.json` whenever one changes state:

    {"pid": 123, "sessions": {"10.0.0.1": {"state": "up", "diag": "none", "since": 1.7e9,
                                           "localDisc": 7, "remoteDisc": 9}}}

It listens on UDP 3784 (IPv4 and, where the node has it, IPv6), accepts only packets
that arrive with TTL / hop limit 255 (RFC 5881: single hop), and sends from one source
port of 49152-65535 per family with TTL 255. A multihop session (`hops` > 1, RFC 5883)
uses port 4784 instead, accepts a TTL down to 256 - hops (the peer sends 255), and sends
from its `local` address where one is given (the peer's session names it), from a source
port of its own per local address. A session removed from the file, and every
session when the process is told to stop (SIGTERM), is announced AdminDown first, so the
peer knows the end is deliberate. With no session left it exits. The agent records the
PID in `DIR/bfd.pid` and adopts a running daemon after its own restart.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from bgp import bfd
from bgp.types import IPAddress

log = logging.getLogger("bgp.bfd")

SESSIONS, STATE, PIDFILE = "sessions.json", "state.json", "bfd.pid"
TTL = 255
# cmsg types (Linux): IP_TTL carries the received TTL with IP_RECVTTL set
IP_RECVTTL, IP_TTL_CMSG = 12, 2
IPV6_RECVHOPLIMIT, IPV6_HOPLIMIT = 51, 52


def parse_sessions(text: str) -> dict[IPAddress, bfd.Settings]:
    """sessions.json → peer address → settings; ValueError naming what is wrong."""
    raw = json.loads(text)
    out: dict[IPAddress, bfd.Settings] = {}
    for i, s in enumerate(raw.get("sessions", [])):
        try:
            peer = ipaddress.ip_address(s["peer"])
            local = ipaddress.ip_address(s["local"]) if s.get("local") else None
            out[peer] = bfd.Settings(int(s.get("minRxMs", 300)), int(s.get("minTxMs", 300)),
                                     int(s.get("multiplier", 3)), int(s.get("hops", 1)),
                                     local)
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"sessions[{i}]: {e}") from None
    return out


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class Responder:
    """The sockets and the sessions; `run()` until stopped or left with no session."""

    def __init__(self, directory: Path, rng: random.Random | None = None) -> None:
        self.dir = directory
        self.rng = rng or random.Random()
        self.sessions: dict[IPAddress, bfd.Session] = {}
        self.since: dict[IPAddress, float] = {}
        self.stopping = False
        self._file_sig: tuple[int, int] | None = None
        self.rx: dict[socket.socket, bool] = {}  # socket → multihop
        self.tx: dict[int, socket.socket] = {}
        self.tx_from: dict[IPAddress, socket.socket] = {}  # multihop, by local address
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            try:
                self.rx[self._rx_socket(family, addr)] = False
                self.tx[family] = self._tx_socket(family)
            except OSError as e:
                if family == socket.AF_INET:
                    raise
                log.info("event=bfd_no_ipv6 error=%r", str(e))
        self._multihop_rx: set[int] = set()  # families listening on port 4784
        self._no_source: set[IPAddress] = set()  # local addresses told missing

    def _listen_multihop(self) -> None:
        """Open port 4784 for each family not listening yet (once a multihop session is
        wanted); OSError if one cannot be opened (the others are kept)."""
        for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
            if family in self.tx and family not in self._multihop_rx:
                self.rx[self._rx_socket(family, addr, bfd.MULTIHOP_PORT)] = True
                self._multihop_rx.add(family)

    def _rx_socket(self, family: int, addr: str, port: int = bfd.BFD_PORT) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
        s.bind((addr, port))  # no SO_REUSEADDR: one responder per namespace
        s.setblocking(False)
        return s

    def _tx_socket(self, family: int, local: IPAddress | None = None) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
        ports = list(bfd.SOURCE_PORTS)
        self.rng.shuffle(ports)
        for port in ports[:64]:
            try:
                s.bind((str(local) if local is not None
                        else "::" if family == socket.AF_INET6 else "0.0.0.0", port))
                return s
            except OSError:
                continue
        s.close()
        raise OSError(f"no free BFD source port for family {family}")

    # ---------------------------------------------------------------- sessions
    def load(self, now: float) -> None:
        """Apply sessions.json if it changed since the last look."""
        path = self.dir / SESSIONS
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        sig = (st.st_ino, st.st_mtime_ns)
        if sig == self._file_sig:
            return
        self._file_sig = sig
        try:
            want = parse_sessions(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("event=bfd_sessions_unreadable file=%s error=%r", path, str(e))
            return
        if any(s.multihop for s in want.values()):
            try:
                self._listen_multihop()
            except OSError as e:
                log.warning("event=bfd_multihop_unavailable error=%r", str(e))
        moved = {p for p, s in want.items()
                 if p in self.sessions and not self.sessions[p].settings.same_path(s)}
        for peer in sorted((set(self.sessions) - set(want)) | moved, key=str):
            self._send(peer, [self.sessions[peer].shutdown(now)])
            del self.sessions[peer]
            self.since.pop(peer, None)
            log.info("event=bfd_session_removed peer=%s", peer)
        used = {s.local_disc for s in self.sessions.values()}
        for peer, settings in sorted(want.items(), key=lambda kv: str(kv[0])):
            s = self.sessions.get(peer)
            if s is None:
                disc = 0
                while disc == 0 or disc in used:
                    disc = self.rng.randrange(1, 2**32)
                used.add(disc)
                self.sessions[peer] = bfd.Session(disc, settings, now, self.rng)
                self.since[peer] = time.time()
                log.info("event=bfd_session_added peer=%s disc=%d", peer, disc)
            elif s.settings != settings:
                self._send(peer, s.update(settings, now))
        self.write_state()

    def write_state(self) -> None:
        doc: dict[str, Any] = {"pid": os.getpid(), "sessions": {
            str(p): {"state": s.state.name.lower().replace("_", ""),
                     "diag": s.diag.name.lower(), "since": self.since.get(p, 0.0),
                     "localDisc": s.local_disc, "remoteDisc": s.remote_disc}
            for p, s in sorted(self.sessions.items(), key=lambda kv: str(kv[0]))}}
        _write_atomic(self.dir / STATE, json.dumps(doc, indent=1))

    # ---------------------------------------------------------------- packets
    def _sender(self, peer: IPAddress, settings: bfd.Settings) -> socket.socket | None:
        """The socket packets to peer leave from: its family's, or (multihop from a
        local address) one bound to that address; None if there is none."""
        family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
        local = settings.local if settings.multihop else None
        if local is None:
            return self.tx.get(family)
        s = self.tx_from.get(local)
        if s is None:
            try:
                s = self.tx_from[local] = self._tx_socket(family, local)
            except OSError as e:  # the address is not (yet) on the node
                if local not in self._no_source:
                    log.warning("event=bfd_no_source local=%s error=%r", local, str(e))
                self._no_source.add(local)
                return None
            self._no_source.discard(local)
        return s

    def _send(self, peer: IPAddress, pkts: list[bfd.Packet]) -> None:
        sess = self.sessions.get(peer)
        settings = sess.settings if sess is not None else bfd.Settings()
        s = self._sender(peer, settings)
        if s is None:
            return
        port = bfd.MULTIHOP_PORT if settings.multihop else bfd.BFD_PORT
        for p in pkts:
            with contextlib.suppress(OSError):  # unreachable for now: detection decides
                s.sendto(bfd.encode(p), (str(peer), port))

    def _receive(self, s: socket.socket, multihop: bool, now: float) -> None:
        while True:
            try:
                data, anc, _, addr = s.recvmsg(128, socket.CMSG_SPACE(4))
            except (BlockingIOError, InterruptedError):
                return
            ttl = next((struct.unpack("i", d[:4])[0] for lvl, typ, d in anc
                        if (lvl, typ) in ((socket.IPPROTO_IP, IP_TTL_CMSG),
                                          (socket.IPPROTO_IPV6, IPV6_HOPLIMIT))
                        and len(d) >= 4), None)
            peer = ipaddress.ip_address(addr[0].split("%")[0])
            if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:
                peer = peer.ipv4_mapped
            sess = self.sessions.get(peer)
            if (sess is None or sess.settings.multihop != multihop or ttl is None
                    or ttl < sess.settings.min_ttl()):
                continue  # not a peer of ours (on this port), or from too far (RFC 5881 5)
            try:
                pkt = bfd.decode(data)
            except ValueError:
                continue
            self._track(peer, sess, lambda s=sess, p=pkt: s.receive(p, now))

    def _track(self, peer: IPAddress, sess: bfd.Session, step: Any) -> None:
        before = sess.state
        self._send(peer, step())
        if sess.state != before:
            self.since[peer] = time.time()
            log.info("event=bfd_session_state peer=%s state=%s diag=%s", peer,
                     sess.state.name.lower(), sess.diag.name.lower())
            self.write_state()

    def run(self) -> None:
        while True:
            now = time.monotonic()
            if self.stopping:
                for peer, s in self.sessions.items():
                    self._send(peer, [s.shutdown(now)])
                return
            self.load(now)
            if not self.sessions and (self.dir / SESSIONS).exists():
                log.info("event=bfd_no_sessions_left")
                return
            for peer, s in list(self.sessions.items()):
                if s.next_deadline() <= now:
                    self._track(peer, s, lambda s=s, n=now: s.poll(n))
            deadline = min((s.next_deadline() for s in self.sessions.values()),
                           default=now + 0.1)
            wait = max(0.0, min(deadline - time.monotonic(), 0.1))  # the file, every 0.1 s
            ready, _, _ = select.select(list(self.rx), [], [], wait)
            for sock in ready:
                self._receive(sock, self.rx[sock], time.monotonic())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="ts=%(asctime)s level=%(levelname)s %(message)s")
    args.dir.mkdir(parents=True, exist_ok=True)
    r = Responder(args.dir)

    def stop(*_: object) -> None:
        r.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        r.run()
    finally:
        (args.dir / STATE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
