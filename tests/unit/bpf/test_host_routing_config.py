"""--host-routing reaches the programs: the agent's flag becomes DatapathSettings,
DatapathConfig and the RR_HOST_ROUTING constant the pod and uplink programs are built
with (bpf by default, as the chart's default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpf.loader import DatapathConfig, source_text
from controller.cli import build_parser
from controller.cli_bgp import datapath_settings

BASE = ["agent", "--node", "n1", "--manifests", "/m", "--datapath", "--uplink", "bond0"]


@pytest.mark.parametrize(("flags", "expected"), [([], True),
                                                 (["--host-routing", "bpf"], True),
                                                 (["--host-routing", "kernel"], False)])
def test_flag_to_settings(flags: list[str], expected: bool) -> None:
    s = datapath_settings(build_parser().parse_args(BASE + flags))
    assert s is not None and s.host_routing is expected and s.uplink == "bond0"


def test_no_datapath_no_settings() -> None:
    args = build_parser().parse_args(["agent", "--node", "n1", "--manifests", "/m"])
    assert datapath_settings(args) is None


def test_unknown_value_refused() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(BASE + ["--host-routing", "maybe"])


@pytest.mark.parametrize("entry", ["pod.c", "uplink.c"])
@pytest.mark.parametrize("on", [True, False])
def test_constant_in_the_programs(entry: str, on: bool) -> None:
    text = source_text(entry, DatapathConfig("t", pin_root=Path("/tmp/x"), host_routing=on))
    assert f"#define RR_HOST_ROUTING {int(on)}\n" in text
    assert text.count("RR_HOST_ROUTING") >= 2  # and used there
