"""The nftables MasqueradePort: the contract in a namespace of its own, and the
masquerade it makes: a pod's packet to an outside address leaves with the node's
address, one to another pod of the cluster keeps the pod's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import ip_network as N

import pytest

from controller.desired.masquerade import MasqPlan
from controller.kernel.masquerade import NftMasquerade
from controller.lab.netns import Lab, Netns, veth
from tests.unit.kernel.masq_contract import check_apply_current_remove

pytestmark = pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (nftables)")


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab(f"rrq{os.getpid() % 10000}") as lab:
        yield lab


def test_nft_contract(lab: Lab) -> None:
    ns = lab.netns("c")
    check_apply_current_remove(NftMasquerade(ns.name))


def source_seen(client: Netns, server: Netns, dst: str) -> str:
    """The source address `server` sees on a UDP datagram `client` sends to dst."""
    recv = server.popen([sys.executable, "-c",
                         "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                         "s.bind(('0.0.0.0', 9999)); s.settimeout(5);"
                         "print(s.recvfrom(64)[1][0], flush=True)"],
                        stdout=subprocess.PIPE)
    try:
        for _ in range(20):
            client.run([sys.executable, "-c",
                        "import socket, time; s = socket.socket(socket.AF_INET, "
                        f"socket.SOCK_DGRAM); s.sendto(b'x', ('{dst}', 9999))"])
            try:
                out, _ = recv.communicate(timeout=0.25)
                return out.decode().strip()
            except subprocess.TimeoutExpired:
                continue
        return ""
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.wait()


def test_a_pods_packet_out_of_the_cluster_leaves_with_the_nodes_address(lab: Lab) -> None:
    pod, node, ext = lab.netns("p"), lab.netns("n"), lab.netns("x")
    veth(pod, "eth0", node, "p0")
    veth(node, "eth0", ext, "eth0")
    pod.add_address("eth0", "10.244.1.5/24")
    pod.add_route("default", via="10.244.1.1")
    node.add_address("p0", "10.244.1.1/24")
    node.add_address("eth0", "192.0.2.1/24")
    node.sysctl("net.ipv4.ip_forward", "1")
    ext.add_address("eth0", "192.0.2.2/24")
    ext.add_address("lo", "10.244.2.9/32")  # a pod of another node, behind ext
    node.add_route("10.244.2.0/24", via="192.0.2.2")
    ext.add_route("10.244.1.0/24", via="192.0.2.1")
    assert source_seen(pod, ext, "192.0.2.2") == "10.244.1.5"  # no masquerade yet
    port = NftMasquerade(node.name)
    port.apply(MasqPlan((N("10.244.1.0/24"),), (N("10.244.0.0/16"),)))
    assert source_seen(pod, ext, "192.0.2.2") == "192.0.2.1"  # outside: the node's
    assert source_seen(pod, ext, "10.244.2.9") == "10.244.1.5"  # a pod: kept
    port.apply(None)
    assert source_seen(pod, ext, "192.0.2.2") == "10.244.1.5"
