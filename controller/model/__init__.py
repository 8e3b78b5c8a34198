"""Parsed inputs: Kubernetes objects and rackroute CRDs as frozen dataclasses."""
