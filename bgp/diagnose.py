"""Why a BGP session is not up, in words a user can act on (pure).

Neither speaker says why a session never came up: gobgpd logs nothing at its info level
for a refused OPEN and keeps only message counters, ExaBGP says why a session went down
but not why one never came. What they do say is enough to tell the usual cases apart:

- the peer sent NOTIFICATIONs since the session was last up: it refuses what we offer
  (its neighbor statement for this node: our address, our ASN, the password);
- we sent them: we refused its OPEN (its ASN against `peerASN`, its router ID);
- neither, still trying: no TCP connection at all (the address unreachable, no neighbor
  statement there for us, port 179 filtered; an MD5 password mismatch looks the same, as
  the kernel drops the segments silently).

`session_problem` is used by both adapters for `PeerStatus.last_error`; the status (BGP
NodeConfig `status.peers[].lastError`) and `rackroute bgp peers` show it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bgp.types import PeerSpec, SessionState

TRYING = (SessionState.IDLE, SessionState.CONNECT, SessionState.ACTIVE, SessionState.UNKNOWN)

# NOTIFICATION error codes and subcodes (RFC 4271 4.5 and 6, RFC 4486, RFC 5492, RFC 9234)
CODES = {1: "Message Header Error", 2: "OPEN Message Error", 3: "UPDATE Message Error",
         4: "Hold Timer Expired", 5: "Finite State Machine Error", 6: "Cease"}
SUBCODES = {
    (2, 1): "Unsupported Version Number", (2, 2): "Bad Peer AS",
    (2, 3): "Bad BGP Identifier", (2, 4): "Unsupported Optional Parameter",
    (2, 6): "Unacceptable Hold Time", (2, 7): "Unsupported Capability",
    (2, 11): "Role Mismatch",
    (6, 1): "Maximum Number of Prefixes Reached", (6, 2): "Administrative Shutdown",
    (6, 3): "Peer De-configured", (6, 4): "Administrative Reset",
    (6, 5): "Connection Rejected", (6, 6): "Other Configuration Change",
    (6, 7): "Connection Collision Resolution", (6, 8): "Out of Resources",
    (6, 9): "Hard Reset", (6, 10): "BFD Down",
}
HINTS = {(2, 2): "the ASNs: peerASN against the peer's own, and the peer's remote-as for "
                 "this node against localASN",
         (2, 3): "the router IDs: the peer's must differ from this node's routerID",
         (2, 6): "the hold times: holdTimeSeconds 0 or 3 and more, as the peer accepts",
         (2, 7): "a capability one side requires: the families, graceful restart"}
_NOTIFICATION = re.compile(r"notification (received|sent) \((\d+)\s*,\s*(\d+)\)")


def notification_text(code: int, subcode: int) -> str:
    """`OPEN Message Error / Bad Peer AS (2/2)`."""
    name = CODES.get(code, "error")
    sub = SUBCODES.get((code, subcode))
    return f"{name}{' / ' + sub if sub else ''} ({code}/{subcode})"


def _worded(reason: str) -> str:
    """A speaker's reason with a NOTIFICATION's numbers put in words, and a hint."""
    m = _NOTIFICATION.search(reason)
    if m is None:
        return reason
    code, sub = int(m.group(2)), int(m.group(3))
    who = "the peer sent" if m.group(1) == "received" else "this node sent"
    hint = HINTS.get((code, sub))
    return (f"{who} a NOTIFICATION: {notification_text(code, sub)}"
            + (f"; check {hint}" if hint else ""))


@dataclass(frozen=True)
class Notifications:
    """NOTIFICATION messages since the session was last Established (or configured)."""

    received: int = 0
    sent: int = 0


def session_problem(spec: PeerSpec, state: SessionState, local_asn: int,
                    seen: Notifications = Notifications(),
                    reason: str | None = None) -> str | None:
    """What keeps the session with `spec` from coming up; None when it is up or on its
    way (OPEN sent or confirmed). `reason`: the speaker's own words for the last time
    the session went down, said first when it has them."""
    if state not in TRYING:
        return None
    where = f"{spec.address} port {spec.peer_port}"
    if reason:
        said = f"the session went down: {_worded(reason)}"
    elif seen.received:
        said = (f"the peer refused the session ({seen.received} NOTIFICATION"
                f"{'s' if seen.received > 1 else ''} from it since it was last up): check its "
                f"neighbor statement for this node (our address, remote-as {local_asn}"
                f"{', the password' if spec.password else ''})")
    elif seen.sent:
        said = (f"this node refused the peer's OPEN ({seen.sent} NOTIFICATION"
                f"{'s' if seen.sent > 1 else ''} sent): check peerASN "
                f"({spec.peer_asn or 'any'}) against the peer's ASN, and that its router ID "
                "is not this node's")
    elif spec.passive:
        said = (f"no connection from the peer yet (this node only listens): check that "
                f"{spec.address} has a neighbor statement for this node and reaches it")
    else:
        said = (f"no TCP connection with {where}: the peer is unreachable, has no "
                "neighbor statement for this node, or filters port 179")
        if spec.password:
            said += " (a password mismatch looks the same: the kernel drops such segments)"
    return said
