"""The Speaker contract (tests/unit/bgp/contract.py) against the real adapters.

Each speaker runs inside its own namespace with no reachable neighbor.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bgp.speaker import Speaker
from tests.integration.bgp.conftest import Topo, global_config
from tests.unit.bgp.contract import SpeakerContract

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def speaker(tor_only: Topo) -> Iterator[Speaker]:
    node = tor_only.nodes[0]
    s = tor_only.make_speaker(node)
    s.start(global_config(node))
    yield s


class TestRealSpeakerContract(SpeakerContract):
    pass
