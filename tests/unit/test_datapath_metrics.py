"""The datapath's map metrics: what a scrape exposes (entries, capacity, memory per map,
filters armed), the cache between scrapes, and a scrape while the pins are gone."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from bpf.mapstat import FilterStat, MapStat
from controller.metrics import DatapathCollector, PolicyCollector


def test_a_scrape_shows_each_map_and_filter_and_reads_at_most_every_interval() -> None:
    now = [100.0]
    stats = ([MapStat("rr_ct", "lru_hash", 6, 4096, 459648)],
             [FilterStat("rr_vips", True, 2), FilterStat("rr_replies", False, 0)])
    c = DatapathCollector("n1", lambda: stats, min_interval=15, clock=lambda: now[0])
    reg = CollectorRegistry()
    reg.register(c)
    text = generate_latest(reg).decode()
    assert 'rackroute_datapath_map_entries{map="rr_ct",node="n1"} 6.0' in text
    assert 'rackroute_datapath_map_capacity{map="rr_ct",node="n1"} 4096.0' in text
    assert 'rackroute_datapath_map_memory_bytes{map="rr_ct",node="n1"} 459648.0' in text
    assert 'rackroute_datapath_filter_armed{filter="rr_vips",node="n1"} 1.0' in text
    assert 'rackroute_datapath_filter_armed{filter="rr_replies",node="n1"} 0.0' in text
    generate_latest(reg)
    assert c.reads == 1  # cached within the interval
    now[0] += 15
    generate_latest(reg)
    assert c.reads == 2


def test_a_scrape_without_the_pins_shows_nothing_and_does_not_fail() -> None:
    def gone() -> tuple[list[MapStat], list[FilterStat]]:
        raise FileNotFoundError("no pin dir")

    reg = CollectorRegistry()
    reg.register(DatapathCollector("n1", gone))
    assert "rackroute_datapath" not in generate_latest(reg).decode()


def test_policy_metrics_count_each_verdict_and_the_pods_under_policy() -> None:
    reg = CollectorRegistry()
    reg.register(PolicyCollector("n1", lambda: {"passed": 7, "dropped": 2, "new": 3},
                                 lambda: 4, lambda: {"web/api": 2}))
    text = generate_latest(reg).decode()
    assert 'rackroute_policy_pod_dropped_total{node="n1",pod="web/api"} 2.0' in text
    assert 'rackroute_policy_packets_total{node="n1",verdict="dropped"} 2.0' in text
    assert 'rackroute_policy_packets_total{node="n1",verdict="passed"} 7.0' in text
    assert 'rackroute_policy_endpoints{node="n1"} 4.0' in text

    def gone() -> dict[str, int]:
        raise FileNotFoundError("rr_pol_stats")

    reg = CollectorRegistry()
    reg.register(PolicyCollector("n1", gone, lambda: 0))
    text = generate_latest(reg).decode()
    assert "rackroute_policy_packets" not in text and "rackroute_policy_endpoints" in text
