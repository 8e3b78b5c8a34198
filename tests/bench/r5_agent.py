"""The per-node agent for R5, as a process, with a manifest poll interval (`rackroute
agent` has no flag for it): `python -m tests.bench.r5_agent NODE MANIFESTS STATE POLL`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from controller.agent import Agent, AgentConfig
from controller.cli import stop_event


def main(argv: list[str]) -> int:
    node, manifests, state, poll = argv[1], Path(argv[2]), Path(argv[3]), float(argv[4])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = AgentConfig(node=node, manifests=manifests, speaker="gobgp", state_dir=state,
                      metrics_port=0, resync=30.0, poll_interval=poll)
    Agent(cfg).run(stop_event())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
