"""Where the API server is and who we are: kubeconfig files and the pod's service account."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from controller.sources import kubeapi
from controller.sources.kubeapi import KubeConfig, from_kubeconfig, in_cluster


def write(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def kubeconfig(current: str = "b") -> dict[str, object]:
    return {
        "current-context": current,
        "clusters": [
            {"name": "one", "cluster": {"server": "https://10.0.0.1:6443",
                                        "certificate-authority": "ca.crt"}},
            {"name": "two", "cluster": {"server": "https://10.0.0.2:6443",
                                        "certificate-authority-data":
                                            base64.b64encode(b"PEM").decode()}},
        ],
        "users": [
            {"name": "static", "user": {"token": "s3cret"}},
            {"name": "file", "user": {"tokenFile": "/var/run/token"}},
        ],
        "contexts": [
            {"name": "a", "context": {"cluster": "one", "user": "static"}},
            {"name": "b", "context": {"cluster": "two", "user": "file"}},
        ],
    }


def test_the_current_context_or_a_named_one(tmp_path: Path) -> None:
    p = write(tmp_path / "config", kubeconfig())
    cfg = from_kubeconfig(p)
    assert cfg.server == "https://10.0.0.2:6443"
    assert cfg.token_file == Path("/var/run/token")
    assert cfg.ca_file is not None and cfg.ca_file.read_bytes() == b"PEM"  # inline data
    cfg = from_kubeconfig(p, "a")
    assert (cfg.server, cfg.token) == ("https://10.0.0.1:6443", "s3cret")
    assert cfg.ca_file == tmp_path / "ca.crt"  # relative to the kubeconfig's directory


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("current-context"), "current-context: not set"),
    (lambda d: d.update({"current-context": "nope"}), "contexts: no entry named 'nope'"),
    (lambda d: d["clusters"][1]["cluster"].pop("server"), "clusters[two].server: required"),
])
def test_a_bad_kubeconfig_names_the_field(tmp_path: Path, change: object,
                                          message: str) -> None:
    doc = kubeconfig()
    change(doc)  # type: ignore[operator]
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_kubeconfig(write(tmp_path / "config", doc))


def test_in_cluster_reads_the_service_account_and_rereads_its_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubeapi, "SA_DIR", tmp_path)
    (tmp_path / "token").write_text("t1\n")
    (tmp_path / "ca.crt").write_text("PEM")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    cfg = in_cluster()
    assert cfg.server == "https://[fd00::1]:443"
    assert cfg.ca_file == tmp_path / "ca.crt"
    assert cfg.bearer() == "t1"
    (tmp_path / "token").write_text("t2\n")  # the kubelet rotated it
    assert cfg.bearer() == "t2"


def test_only_https_or_http_servers() -> None:
    with pytest.raises(ValueError, match="https"):
        kubeapi.HTTPKubeAPI(KubeConfig("ftp://10.0.0.1"))
