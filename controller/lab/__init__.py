"""Network-namespace lab harness: namespaces, veth links, and FRR routers run by hand.

Used by the integration tests and the FRR lab. Everything it creates carries a caller-given
name prefix and is removed by the context managers even when the body fails.
"""
