"""--host-routing reaches the programs: the agent's flag becomes DatapathSettings,
DatapathConfig and the RR_HOST_ROUTING constant the pod and uplink programs are built
with (bpf by default, as the chart's default). --per-packet-lb off likewise becomes
RR_PER_PACKET_LB 0, a pod part without its egress program, and pods that keep the
forwarding program only when host routing is bpf; and --service-loopback-ipv4/6 the
RR_LOOPBACK* words the hairpin translation compares and writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpf.loader import PARTS, DatapathConfig, loopback_defines, part_programs, source_text
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


@pytest.mark.parametrize("on", [True, False])
def test_per_packet_lb_constant_in_the_pod_program(on: bool) -> None:
    text = source_text("pod.c", DatapathConfig("t", pin_root=Path("/tmp/x"), per_packet_lb=on))
    assert f"#define RR_PER_PACKET_LB {int(on)}\n" in text
    assert "rr_forward(skb, &p, 0, RR_PER_PACKET_LB)" in text  # new flows only with it


def test_without_per_packet_lb_the_pod_part_has_no_egress_program() -> None:
    off = DatapathConfig("t", per_packet_lb=False)
    assert part_programs("pod", off) == ("rr_pod_ingress", "rr_replies_mark")
    assert part_programs("pod", DatapathConfig("t")) == PARTS["pod"][1]
    for part in ("uplink", "sock"):
        assert part_programs(part, off) == PARTS[part][1]


@pytest.mark.parametrize(("routing", "pods"), [("bpf", True), ("kernel", False)])
def test_without_per_packet_lb_pods_carry_programs_only_to_forward(routing: str,
                                                                    pods: bool) -> None:
    s = datapath_settings(build_parser().parse_args(
        BASE + ["--socket-lb-cgroup", "/sys/fs/cgroup/unified/k", "--per-packet-lb", "off",
                "--host-routing", routing]))
    assert s is not None and not s.per_packet_lb and s.pod_programs is pods
    on = datapath_settings(build_parser().parse_args(BASE + ["--host-routing", routing]))
    assert on is not None and on.pod_programs


def test_service_loopback_flags_reach_the_programs() -> None:
    s = datapath_settings(build_parser().parse_args(BASE))
    assert s is not None and (s.service_loopback4, s.service_loopback6) == (
        "169.254.42.1", "100::42:1")
    s = datapath_settings(build_parser().parse_args(
        BASE + ["--service-loopback-ipv4", "10.255.0.1", "--service-loopback-ipv6", "fd::1"]))
    assert s is not None and (s.service_loopback4, s.service_loopback6) == ("10.255.0.1",
                                                                            "fd::1")
    cfg = DatapathConfig("t", service_loopback4="10.255.0.1", service_loopback6="fd::1")
    # network byte order, read as this (little-endian) machine's words
    assert loopback_defines(cfg) == [
        "#define RR_LOOPBACK4 0x0100ff0a", "#define RR_LOOPBACK6_0 0x0000fd00",
        "#define RR_LOOPBACK6_1 0x00000000", "#define RR_LOOPBACK6_2 0x00000000",
        "#define RR_LOOPBACK6_3 0x01000000"]
    assert "#define RR_LOOPBACK4 0x0100ff0a\n" in source_text("pod.c", cfg)


def test_the_header_defaults_are_the_configs() -> None:
    # maps.h's fallbacks (a program built without the loader's defines) are the same
    header = (Path(__file__).parents[3] / "bpf" / "src" / "maps.h").read_text()
    for line in loopback_defines(DatapathConfig("t")):
        assert line in header, line


@pytest.mark.parametrize("flag, value", [("--service-loopback-ipv4", "100::1"),
                                         ("--service-loopback-ipv6", "169.254.0.1"),
                                         ("--service-loopback-ipv4", "nope")])
def test_a_service_loopback_of_the_wrong_family_is_refused(flag: str, value: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(BASE + [flag, value])
