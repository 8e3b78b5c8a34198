"""Which source a command reads: a manifest directory (`--manifests`), or the Kubernetes
API (`--kubeconfig FILE [--kube-context NAME]`, or `--in-cluster` with the pod's service
account). Secrets (BGP passwords) are read in one namespace: `--secrets-namespace`, by
default this pod's own (POD_NAMESPACE, or the service account's), else kube-system."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from controller.sources.kubeapi import SA_DIR, HTTPKubeAPI, from_kubeconfig, in_cluster


def add_source_args(p: argparse.ArgumentParser) -> None:
    """The source options, one of which is required."""
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--manifests", help="directory of YAML manifests")
    g.add_argument("--kubeconfig", help="read the cluster through this kubeconfig")
    g.add_argument("--in-cluster", action="store_true",
                   help="read the cluster with the pod's service account")
    p.add_argument("--kube-context", default="", help="with --kubeconfig: this context")
    p.add_argument("--secrets-namespace", default="",
                   help="namespace of the Secrets peers refer to (default: the service "
                        "account's namespace in the cluster, else kube-system)")


def add_watch_cilium_arg(p: argparse.ArgumentParser) -> None:
    """--watch-cilium-crds: read Cilium's spellings of the configuration kinds as well."""
    p.add_argument("--watch-cilium-crds", action="store_true",
                   help="with the API server: read Cilium's CiliumBGPClusterConfig, "
                        "CiliumBGPPeerConfig, CiliumBGPAdvertisement, "
                        "CiliumBGPNodeConfigOverride and CiliumLoadBalancerIPPool objects "
                        "(cilium.io/v2, else v2alpha1) as rackroute's own; never written")


def kube_api(args: argparse.Namespace) -> HTTPKubeAPI | None:
    """The API client the arguments ask for; None with --manifests. ValueError on a bad
    kubeconfig or when not in a pod."""
    if getattr(args, "kubeconfig", None):
        return HTTPKubeAPI(from_kubeconfig(Path(args.kubeconfig), args.kube_context))
    if getattr(args, "in_cluster", False):
        return HTTPKubeAPI(in_cluster())
    return None


def own_namespace() -> str:
    """The namespace this process runs in: POD_NAMESPACE, the service account's, else
    kube-system."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return (SA_DIR / "namespace").read_text().strip() or "kube-system"
    except OSError:
        return "kube-system"


def secrets_namespace(args: argparse.Namespace) -> str:
    if getattr(args, "secrets_namespace", ""):
        return str(args.secrets_namespace)
    return own_namespace()
