"""The real API server fixtures of tests/kube, for tests that also need network namespaces."""

from tests.kube.conftest import fresh_apiserver  # noqa: F401
