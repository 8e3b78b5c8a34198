"""The Speaker contract (tests/unit/bgp/contract.py) against the real adapters.

Each speaker runs inside its own namespace with no reachable neighbor.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from bgp.gobgp.adapter import GobgpSpeaker
from bgp.speaker import Speaker
from bgp.types import Path
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
    def remove_behind_back(self, speaker: Speaker, path: Path) -> None:
        if not isinstance(speaker, GobgpSpeaker):
            super().remove_behind_back(speaker, path)  # ExaBGP: skips (see its adapter)
            return
        gobgp_rib_del(speaker, path)


def gobgp_rib_del(speaker: GobgpSpeaker, path: Path) -> None:
    """`gobgp global rib del PREFIX` against the adapter's own API socket."""
    afi = "ipv4" if path.prefix.version == 4 else "ipv6"
    subprocess.run(["gobgp", "--target", f"unix://{speaker.proc.socket}", "global", "rib",
                    "del", str(path.prefix), "-a", afi], check=True, capture_output=True,
                   timeout=10)
