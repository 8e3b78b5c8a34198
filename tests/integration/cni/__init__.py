"""Integration tests for rackroute-cni: the real executable, run as a runtime runs it."""
