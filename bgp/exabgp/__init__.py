"""ExaBGP adapter: runs `exabgp` as a supervised subprocess and drives it through an API
relay process with acknowledged commands.

ExaBGP cannot do (so `ExabgpSpeaker.features` leaves them out): BFD, a connect-retry
timer, the graceful-restart notification flag (RFC 8538), an Adj-RIB-Out query per peer
(`advertised(peer)` reports what was announced to an established peer's families), and
keepalive independent of hold time (always hold/3).
"""
