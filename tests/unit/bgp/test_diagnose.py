"""Why a session is not up, from what the speakers tell (bgp/diagnose.py)."""

from __future__ import annotations

from ipaddress import ip_address

from bgp.diagnose import Notifications, notification_text, session_problem
from bgp.types import PeerSpec, SessionState

ACTIVE, UP = SessionState.ACTIVE, SessionState.ESTABLISHED


def peer(**kw: object) -> PeerSpec:
    return PeerSpec(name="tor", address=ip_address("10.0.0.1"), peer_asn=65000,
                    **kw)  # type: ignore[arg-type]


def test_a_session_up_or_on_its_way_has_no_problem() -> None:
    p = peer()
    assert session_problem(p, UP, 65001, Notifications(3, 3)) is None
    assert session_problem(p, SessionState.OPENSENT, 65001) is None


def test_the_peer_refusing_us_names_what_to_check_on_its_side() -> None:
    said = session_problem(peer(), ACTIVE, 65001, Notifications(received=2))
    assert said is not None and said.startswith("the peer refused the session (2 NOTIFICATIONs")
    assert "remote-as 65001" in said


def test_us_refusing_the_peer_names_peer_asn() -> None:
    said = session_problem(peer(), SessionState.IDLE, 65001, Notifications(sent=1))
    assert said is not None and "this node refused the peer's OPEN (1 NOTIFICATION sent)" in said
    assert "peerASN (65000)" in said


def test_no_connection_at_all_and_a_password_mismatch_looks_the_same() -> None:
    said = session_problem(peer(), ACTIVE, 65001)
    assert said is not None and said.startswith("no TCP connection with 10.0.0.1 port 179")
    assert "password" not in said
    with_pw = session_problem(peer(password="s3cret"), ACTIVE, 65001)
    assert with_pw is not None and "password mismatch looks the same" in with_pw
    assert "s3cret" not in with_pw
    passive = session_problem(peer(passive=True), ACTIVE, 65001)
    assert passive is not None and passive.startswith("no connection from the peer yet")


def test_a_speakers_reason_comes_first_with_the_notification_in_words() -> None:
    said = session_problem(peer(), ACTIVE, 65001, Notifications(received=1),
                           reason="notification received (2,2)")
    assert said == ("the session went down: the peer sent a NOTIFICATION: OPEN Message Error "
                    "/ Bad Peer AS (2/2); check the ASNs: peerASN against the peer's own, and "
                    "the peer's remote-as for this node against localASN")
    assert session_problem(peer(), ACTIVE, 65001, reason="tcp closed") == \
        "the session went down: tcp closed"
    assert notification_text(6, 10) == "Cease / BFD Down (6/10)"
    assert notification_text(9, 1) == "error (9/1)"
