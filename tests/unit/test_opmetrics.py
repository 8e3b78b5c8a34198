"""The operator's metrics and probes (controller/opmetrics.py): what a pass leaves in
OperatorState, as Prometheus reads it, and when the operator is ready."""

from __future__ import annotations

import urllib.request

from prometheus_client import generate_latest

from controller.desired.cluster import plan_allocations
from controller.opmetrics import OperatorState, registry_of, serve
from controller.sources.files import ManifestDir
from tests.unit.test_operator import lab_copy


def test_a_pass_is_counted_with_the_pools_and_services(tmp_path) -> None:  # type: ignore[no-untyped-def]
    snap = ManifestDir(lab_copy(tmp_path)).load()
    st = OperatorState()
    assert not st.ready()  # no complete list yet
    st.started = True
    assert not st.ready()  # leading, nothing planned yet
    st.record(plan_allocations(snap))
    st.passes = 1
    assert st.ready()
    text = generate_latest(registry_of(st)).decode()
    assert "rackroute_operator_passes_total 1.0" in text
    assert "rackroute_operator_leader 1.0" in text
    alloc = next(ln for ln in text.splitlines()
                 if ln.startswith('rackroute_lbipam_services{state="allocated"}'))
    assert float(alloc.split()[-1]) >= 1
    assert 'rackroute_lbipam_pool_ips{pool="' in text and 'state="total"' in text
    standby = OperatorState(started=True, leader=False)
    assert standby.ready()  # a standby replica only waits for the lease


def test_the_probes_answer_on_the_metrics_port() -> None:
    st = OperatorState()
    server = serve(st, 0, "127.0.0.1")
    try:
        def get(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}",
                                            timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return int(e.code)

        assert get("/readyz") == 503 and get("/healthz") == 200
        st.started, st.passes = True, 1
        st.tick()
        assert get("/readyz") == 200 and get("/healthz") == 200 and get("/metrics") == 200
    finally:
        server.stop()
