"""A real kube-apiserver backed by etcd on loopback, for integration tests.

The binaries come from ``tests/kube/install-apiserver.sh``, which builds etcd and
kube-apiserver from the Go module proxy into ``<repo>/.gen/etcd`` and
``<repo>/.gen/kube-apiserver``.

Usage::

    from tests.kube.apiserver import available, running_apiserver

    reason = available()
    if reason:
        pytest.skip(reason)
    with running_apiserver(tmp_path) as api:
        api.request("GET", "/api/v1/namespaces")       # admin (system:masters) token
        # or: KUBECONFIG=api.kubeconfig, or api.url + api.token + api.ca_file

Everything binds 127.0.0.1 on free random ports; all files (etcd data, certificates, keys,
token file, logs, kubeconfig) live in ``workdir``. Both processes are stopped by PID on exit.

Admission: the ``ServiceAccount`` plugin is disabled, since there is no controller-manager to
create the ``default`` ServiceAccount that it would require of every Pod. ServiceAccount tokens
can still be had through the TokenRequest API (``.../serviceaccounts/NAME/token``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / ".gen"
INSTALL_SCRIPT = Path(__file__).resolve().with_name("install-apiserver.sh")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16,fd00:96::/108"  # dual-stack, as the lab
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ApiServer:
    """A running kube-apiserver: where it is and how to authenticate as admin."""

    url: str
    token: str
    ca_file: Path
    kubeconfig: Path
    workdir: Path

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that verifies this apiserver's serving certificate."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Any:
        """Send one JSON request (admin token unless ``token`` is given); return the JSON reply.

        Raises ``urllib.error.HTTPError`` on a non-2xx status.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self.ssl_context(), timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


def kube_apiserver_binary() -> Path | None:
    """The kube-apiserver built by the install script, if present."""
    path = GEN / "kube-apiserver"
    return path if path.is_file() and path.stat().st_mode & 0o111 else None


def etcd_binary() -> Path | None:
    """The etcd (3.6) built by the install script, if present.

    Deliberately not an ``etcd`` on PATH: Debian 12's etcd 3.4 lacks RequestWatchProgress,
    which makes kube-apiserver fail every streaming list (``sendInitialEvents=true``).
    """
    path = GEN / "etcd"
    return path if path.is_file() and path.stat().st_mode & 0o111 else None


def available() -> str | None:
    """None when etcd and kube-apiserver are installed, else why not (for ``pytest.skip``)."""
    missing = []
    if kube_apiserver_binary() is None:
        missing.append(f"kube-apiserver ({GEN / 'kube-apiserver'})")
    if etcd_binary() is None:
        missing.append(f"etcd ({GEN / 'etcd'})")
    if not missing:
        return None
    return f"missing {' and '.join(missing)}; run {INSTALL_SCRIPT.relative_to(REPO)}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the test process dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _write_service_account_key(key_file: Path, pub_file: Path) -> None:
    """An RSA key pair for signing/verifying ServiceAccount tokens (PEM files)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        subprocess.run(
            ["openssl", "genrsa", "-out", str(key_file), "2048"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(key_file), "-pubout", "-out", str(pub_file)],
            check=True,
            capture_output=True,
        )
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pub_file.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    key_file.chmod(0o600)


def _write_kubeconfig(path: Path, url: str, token: str, ca_file: Path) -> None:
    # JSON is valid YAML, and kubectl and client libraries read it as a kubeconfig.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": url, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    path.chmod(0o600)


def _wait_etcd(proc: subprocess.Popen[bytes], client_url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(client_url + "/health", timeout=2) as resp:
                if json.loads(resp.read()).get("health") == "true":
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd not healthy after {READY_TIMEOUT:.0f} s:\n{_tail(log)}")
        time.sleep(0.1)


def _wait_ready(proc: subprocess.Popen[bytes], api: ApiServer, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    context: ssl.SSLContext | None = None
    last = "no answer"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited with {proc.returncode}:\n{_tail(log)}")
        req = urllib.request.Request(api.url + "/readyz")
        req.add_header("Authorization", f"Bearer {api.token}")
        try:
            # The self-signed cert appears in --cert-dir a moment after the start.
            context = context or api.ssl_context()
            with urllib.request.urlopen(req, context=context, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except (OSError, ssl.SSLError) as err:
            last = str(err)
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"kube-apiserver not ready after {READY_TIMEOUT:.0f} s ({last}):\n{_tail(log)}"
            )
        time.sleep(0.2)


def _port_clash(log: Path) -> bool:
    return "address already in use" in _tail(log, 200)


@contextlib.contextmanager
def running_apiserver(workdir: Path, compaction: str = "2s") -> Iterator[ApiServer]:
    """Start etcd and kube-apiserver on loopback, yield an :class:`ApiServer`, stop both.

    ``compaction`` is the apiserver's etcd compaction interval (the default is 5 min): kept
    short, and with services watched from etcd itself, a watch of services from an old
    resourceVersion meets 410 Gone within seconds, as clients must expect."""
    apiserver_bin, etcd_bin = kube_apiserver_binary(), etcd_binary()
    if apiserver_bin is None or etcd_bin is None:
        raise RuntimeError(available())
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cert_dir = workdir / "certs"
    cert_dir.mkdir(exist_ok=True)

    token = secrets.token_hex(32)
    token_file = workdir / "tokens.csv"
    token_file.write_text(f'{token},admin,admin-uid,"system:masters"\n')
    token_file.chmod(0o600)
    sa_key, sa_pub = workdir / "sa.key", workdir / "sa.pub"
    _write_service_account_key(sa_key, sa_pub)

    procs: list[subprocess.Popen[bytes]] = []
    try:
        etcd_log = workdir / "etcd.log"
        for _attempt in range(3):
            client_port, peer_port = _free_port(), _free_port()
            client_url = f"http://{LOOPBACK}:{client_port}"
            peer_url = f"http://{LOOPBACK}:{peer_port}"
            etcd = _start(
                [
                    str(etcd_bin),
                    "--name=test",
                    f"--data-dir={workdir / 'etcd-data'}",
                    f"--listen-client-urls={client_url}",
                    f"--advertise-client-urls={client_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=test={peer_url}",
                    "--initial-cluster-state=new",
                    "--logger=zap",
                    "--log-outputs=stderr",
                    "--log-level=warn",
                    # Throwaway test data: skip fsync, which dominates etcd write latency.
                    "--unsafe-no-fsync",
                ],
                etcd_log,
            )
            procs.append(etcd)
            try:
                _wait_etcd(etcd, client_url, etcd_log)
                break
            except RuntimeError:
                _stop(etcd)
                if not _port_clash(etcd_log):
                    raise
        else:
            raise RuntimeError(f"etcd: no free port after 3 tries:\n{_tail(etcd_log)}")

        api_log = workdir / "kube-apiserver.log"
        for _attempt in range(3):
            port = _free_port()
            url = f"https://{LOOPBACK}:{port}"
            # --cert-dir: kube-apiserver makes a self-signed CA and serving cert for
            # 127.0.0.1; apiserver.crt holds the serving cert followed by that CA.
            ca_file = cert_dir / "apiserver.crt"
            api = ApiServer(url, token, ca_file, workdir / "kubeconfig", workdir)
            apiserver = _start(
                [
                    str(apiserver_bin),
                    f"--bind-address={LOOPBACK}",
                    f"--advertise-address={LOOPBACK}",
                    f"--secure-port={port}",
                    f"--cert-dir={cert_dir}",
                    f"--etcd-servers={client_url}",
                    f"--token-auth-file={token_file}",
                    "--authorization-mode=RBAC",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-account-key-file={sa_pub}",
                    f"--service-account-signing-key-file={sa_key}",
                    f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                    "--disable-admission-plugins=ServiceAccount",
                    # The `kubernetes` Service's endpoints would be 127.0.0.1, which the
                    # Endpoints validation rejects (loopback) on every reconcile.
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true",  # as kubeadm's: CNI agents run privileged
                    f"--etcd-compaction-interval={compaction}",
                    # services straight from etcd: a compacted resourceVersion is 410 Gone
                    # there (the watch cache would serve it from its own history)
                    "--watch-cache-sizes=services#0",
                    "--profiling=false",
                ],
                api_log,
            )
            procs.append(apiserver)
            try:
                _wait_ready(apiserver, api, api_log)
                break
            except RuntimeError:
                _stop(apiserver)
                if not _port_clash(api_log):
                    raise
        else:
            raise RuntimeError(f"kube-apiserver: no free port after 3 tries:\n{_tail(api_log)}")

        _write_kubeconfig(api.kubeconfig, api.url, api.token, api.ca_file)
        yield api
    finally:
        for proc in reversed(procs):
            _stop(proc)


def kubeconfig_via(api: ApiServer, port: int, path: Path) -> Path:
    """The server's kubeconfig at `path`, pointing at `port` on the loopback (a relay's:
    the serving certificate is for 127.0.0.1, so it still verifies)."""
    import yaml

    doc = yaml.safe_load(api.kubeconfig.read_text())
    for c in doc["clusters"]:
        c["cluster"]["server"] = f"https://{LOOPBACK}:{port}"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.contextmanager
def reached_from(api: ApiServer, ns: str, path: Path) -> Iterator[Path]:
    """A kubeconfig at `path` for processes inside network namespace `ns`: the server
    through a relay on that namespace's loopback (controller/lab/relay.py). The relay
    stops on exit."""
    from controller.lab.relay import TcpRelay

    relay = TcpRelay(ns, (LOOPBACK, int(api.url.rsplit(":", 1)[1])))
    try:
        yield kubeconfig_via(api, relay.port, path)
    finally:
        relay.close()
