"""The Kubernetes API port: list, watch and write the objects rackroute reads and reports.

`HTTPKubeAPI` speaks the API server's REST protocol with the standard library: lists in
pages, watches as a stream of JSON lines (with bookmarks), merge patches for status. The
credentials come from the pod's service account (`in_cluster`) or a kubeconfig file
(`from_kubeconfig`); a token file is read again on every request, so rotated service
account tokens are picked up. `FakeKubeAPI` (controller/sources/kubefake.py) keeps objects
in memory with the same resourceVersion and watch rules; both pass the same contract tests.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

Obj = dict[str, Any]
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def micro_time(t: float) -> str:
    """A MicroTime (Lease renewals, Event times)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


@dataclass(frozen=True)
class Resource:
    """One API resource: its kind, group/version, plural name and scope."""

    kind: str
    api_version: str  # "v1", "discovery.k8s.io/v1", "rackroute.io/v1alpha1"
    plural: str
    namespaced: bool
    # older group/versions to read when the server does not serve `api_version` (404)
    fallbacks: tuple[str, ...] = ()

    def versions(self) -> tuple[Resource, ...]:
        """This resource at `api_version`, then at each fallback: the order to try them."""
        return (self, *(Resource(self.kind, v, self.plural, self.namespaced)
                        for v in self.fallbacks))

    def path(self, namespace: str = "", name: str = "", sub: str = "") -> str:
        """The REST path: the collection, or one object, or one object's subresource."""
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{urllib.parse.quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{urllib.parse.quote(name, safe='')}"
            if sub:
                base += f"/{sub}"
        return base


def _rr(kind: str, plural: str) -> Resource:
    return Resource(kind, "rackroute.io/v1alpha1", plural, False)


def _cilium(kind: str) -> Resource:
    """A Cilium resource rackroute can read (never write): cilium.io/v2, or v2alpha1 where
    the installed Cilium serves only that."""
    return Resource(kind, "cilium.io/v2", kind.lower() + "s", False, ("cilium.io/v2alpha1",))


RESOURCES: Mapping[str, Resource] = {
    r.kind: r
    for r in (
        Resource("Node", "v1", "nodes", False),
        Resource("Service", "v1", "services", True),
        Resource("Secret", "v1", "secrets", True),
        Resource("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", True),
        Resource("Pod", "v1", "pods", True),
        Resource("Namespace", "v1", "namespaces", False),
        Resource("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", True),
        _rr("BGPClusterConfig", "bgpclusterconfigs"),
        _rr("BGPPeerConfig", "bgppeerconfigs"),
        _rr("BGPAdvertisement", "bgpadvertisements"),
        _rr("BGPNodeConfigOverride", "bgpnodeconfigoverrides"),
        _rr("BGPNodeConfig", "bgpnodeconfigs"),
        _rr("LoadBalancerIPPool", "loadbalancerippools"),
        _rr("NodeNetwork", "nodenetworks"),
        _rr("RackrouteConfig", "rackrouteconfigs"),
        _cilium("CiliumBGPClusterConfig"),
        _cilium("CiliumBGPPeerConfig"),
        _cilium("CiliumBGPAdvertisement"),
        _cilium("CiliumBGPNodeConfigOverride"),
        _cilium("CiliumLoadBalancerIPPool"),
        Resource("Event", "events.k8s.io/v1", "events", True),
    )
}


class ApiError(Exception):
    """A request the API server refused: its HTTP status, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Gone(ApiError):
    """410: the resourceVersion asked for is older than the server keeps; list again."""


def api_error(status: int, body: bytes | Obj) -> ApiError:
    """The error for a status code and a Status object (or raw body)."""
    doc: Obj = body if isinstance(body, dict) else {}
    if isinstance(body, bytes):
        try:
            loaded = json.loads(body or b"{}")
            doc = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            doc = {"message": body[:200].decode("utf-8", "replace")}
    code = int(doc.get("code") or status)
    cls = Gone if code == 410 else ApiError
    return cls(code, str(doc.get("reason") or ""), str(doc.get("message") or ""))


@dataclass(frozen=True)
class WatchEvent:
    """ADDED, MODIFIED, DELETED or BOOKMARK, and the object (a bookmark carries only
    metadata.resourceVersion)."""

    type: str
    obj: Obj


class Watch(Protocol):
    """A stream of events; ends when the server closes it (its timeout), or `close`."""

    def __iter__(self) -> Iterator[WatchEvent]: ...

    def close(self) -> None: ...


class KubeAPI(Protocol):
    """What rackroute asks of the API server."""

    def list(self, res: Resource, namespace: str = "") -> tuple[list[Obj], str]:
        """Every object (of `namespace` alone when given) and the list's resourceVersion."""
        ...

    def watch(self, res: Resource, resource_version: str, namespace: str = "",
              timeout: int = 300) -> Watch:
        """Changes after `resource_version`; raises Gone (now or while iterating) when it is
        too old."""
        ...

    def get(self, res: Resource, name: str, namespace: str = "") -> Obj: ...

    def create(self, res: Resource, obj: Obj, namespace: str = "") -> Obj:
        """Create `obj` (its kind and apiVersion may be left out: `res` gives them)."""
        ...

    def merge_patch(self, res: Resource, name: str, patch: Obj, namespace: str = "",
                    sub: str = "") -> Obj:
        """A JSON merge patch of the object or of its subresource (`status`)."""
        ...

    def delete(self, res: Resource, name: str, namespace: str = "") -> None: ...


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to prove who we are."""

    server: str
    token: str = ""
    token_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    def bearer(self) -> str:
        """The token to send now (a token file is read on every call: tokens rotate)."""
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token


def in_cluster() -> KubeConfig:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token and CA."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ValueError("in-cluster config: KUBERNETES_SERVICE_HOST is not set "
                         "(not running in a pod?)")
    if ":" in host:
        host = f"[{host}]"
    return KubeConfig(f"https://{host}:{port}", token_file=SA_DIR / "token",
                      ca_file=SA_DIR / "ca.crt")


def _data_file(data: str, suffix: str) -> Path:
    """Inline kubeconfig data (base64) in a private file, for ssl's file-only loaders;
    removed when the process exits."""
    fd, name = tempfile.mkstemp(prefix="rackroute-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data))
    atexit.register(lambda: Path(name).unlink(missing_ok=True))
    return Path(name)


def from_kubeconfig(path: Path, context: str = "") -> KubeConfig:
    """The cluster and user of `context` (default: the current one) in a kubeconfig."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"kubeconfig {path}: {e}") from None

    def named(section: str, name: str) -> Obj:
        for entry in doc.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                inner = entry.get(section[:-1]) or {}
                return inner if isinstance(inner, dict) else {}
        raise ValueError(f"kubeconfig {path}: {section}: no entry named {name!r}")

    ctx_name = context or str(doc.get("current-context") or "")
    if not ctx_name:
        raise ValueError(f"kubeconfig {path}: current-context: not set (pass a context)")
    ctx = named("contexts", ctx_name)
    cluster = named("clusters", str(ctx.get("cluster") or ""))
    user = named("users", str(ctx.get("user") or "")) if ctx.get("user") else {}
    server = str(cluster.get("server") or "")
    if not server:
        raise ValueError(f"kubeconfig {path}: clusters[{ctx.get('cluster')}].server: required")
    base = path.parent

    def file_of(key: str, data_key: str, src: Obj, suffix: str) -> Path | None:
        if src.get(data_key):
            return _data_file(str(src[data_key]), suffix)
        if src.get(key):
            p = Path(str(src[key]))
            return p if p.is_absolute() else base / p
        return None

    token_file = user.get("tokenFile")
    return KubeConfig(
        server=server,
        token=str(user.get("token") or ""),
        token_file=Path(str(token_file)) if token_file else None,
        ca_file=file_of("certificate-authority", "certificate-authority-data", cluster, ".crt"),
        cert_file=file_of("client-certificate", "client-certificate-data", user, ".crt"),
        key_file=file_of("client-key", "client-key-data", user, ".key"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


class _HTTPWatch:
    """One watch request's response, read line by line; `close` ends it from any thread."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                 ) -> None:
        self._conn = conn
        self._resp = resp
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[WatchEvent]:
        try:
            while not self._closed.is_set():
                try:
                    line = self._resp.readline()
                except (OSError, ValueError, AttributeError, http.client.HTTPException):
                    # closed under us (http.client then trips over its own None), or the
                    # server went away: the caller watches again
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                ev = json.loads(line)
                obj = ev.get("object") or {}
                if ev.get("type") == "ERROR":
                    raise api_error(int(obj.get("code") or 500), obj)
                yield WatchEvent(str(ev.get("type")), obj)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()


class HTTPKubeAPI:
    """The real API server, over HTTPS (or HTTP for a local test server)."""

    def __init__(self, cfg: KubeConfig, timeout: float = 30.0) -> None:
        self.cfg = cfg
        self.timeout = timeout
        u = urllib.parse.urlsplit(cfg.server)
        if u.scheme not in ("https", "http") or not u.hostname:
            raise ValueError(f"server: must be an https:// URL, got {cfg.server!r}")
        self._https = u.scheme == "https"
        self._host = u.hostname
        self._port = u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []  # kept-alive connections
        self._ctx: ssl.SSLContext | None = None
        if self._https:
            ctx = ssl.create_default_context(
                cafile=str(cfg.ca_file) if cfg.ca_file is not None else None)
            if cfg.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if cfg.cert_file is not None:
                ctx.load_cert_chain(str(cfg.cert_file),
                                    str(cfg.key_file) if cfg.key_file is not None else None)
            self._ctx = ctx

    def _conn(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._ctx)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _headers(self, content_type: str = "") -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "rackroute"}
        token = self.cfg.bearer()
        if token:
            h["Authorization"] = f"Bearer {token}"
        if content_type:
            h["Content-Type"] = content_type
        return h

    def _request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                 body: Obj | None = None, content_type: str = "application/json") -> Obj:
        """One request over a kept-alive connection (a fresh one when the kept one turns
        out closed by the server)."""
        url = self._prefix + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        headers = self._headers(content_type if data is not None else "")
        for attempt in (0, 1):
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            reused = conn is not None
            if conn is None:
                conn = self._conn(self.timeout)
            try:
                conn.request(method, url, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle connection: once more, afresh
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
            break
        if resp.status >= 300:
            raise api_error(resp.status, raw)
        out = json.loads(raw or b"{}")
        return out if isinstance(out, dict) else {}

    def list(self, res: Resource, namespace: str = "") -> tuple[list[Obj], str]:
        items: list[Obj] = []
        query = {"limit": "500"}
        while True:
            page = self._request("GET", res.path(namespace), query)
            for item in page.get("items") or []:
                # typed lists leave kind and apiVersion off their items
                item.setdefault("apiVersion", res.api_version)
                item.setdefault("kind", res.kind)
                items.append(item)
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, str(meta.get("resourceVersion") or "")
            query = {"limit": "500", "continue": str(cont)}

    def watch(self, res: Resource, resource_version: str, namespace: str = "",
              timeout: int = 300) -> Watch:
        query = {"watch": "1", "allowWatchBookmarks": "true",
                 "resourceVersion": resource_version, "timeoutSeconds": str(timeout)}
        conn = self._conn(timeout + 30.0)
        try:
            conn.request("GET", self._prefix + res.path(namespace) + "?"
                         + urllib.parse.urlencode(query), headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 300:
                raise api_error(resp.status, resp.read())
        except BaseException:
            conn.close()
            raise
        return _HTTPWatch(conn, resp)

    def get(self, res: Resource, name: str, namespace: str = "") -> Obj:
        return self._request("GET", res.path(namespace, name))

    def create(self, res: Resource, obj: Obj, namespace: str = "") -> Obj:
        body = {"apiVersion": res.api_version, "kind": res.kind, **obj}
        return self._request("POST", res.path(namespace), body=body)

    def merge_patch(self, res: Resource, name: str, patch: Obj, namespace: str = "",
                    sub: str = "") -> Obj:
        return self._request("PATCH", res.path(namespace, name, sub), body=patch,
                             content_type="application/merge-patch+json")

    def delete(self, res: Resource, name: str, namespace: str = "") -> None:
        self._request("DELETE", res.path(namespace, name))

    def close(self) -> None:
        """Close the kept-alive connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()
