"""One contract for the byte-level map port: the in-memory fake and a real kernel map."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

import pytest

from bpf.mapstore import FakeMap, MapPort, MapWriteError


def _real(ks: int, vs: int, n: int) -> MapPort:
    from bpf import libbpf
    from bpf.mapstore import PinnedMap

    return PinnedMap(libbpf.map_create(libbpf.BPF_MAP_TYPE_HASH, "rr_contract", ks, vs, n))


@pytest.fixture(params=["fake", "kernel"])
def mp(request: pytest.FixtureRequest) -> Iterator[MapPort]:
    if request.param == "kernel" and os.geteuid() != 0:
        pytest.skip("needs root: creating a kernel BPF map")
    made = FakeMap(4, 8, 4) if request.param == "fake" else _real(4, 8, 4)
    yield made
    close = getattr(made, "close", None)
    if close:
        close()


def k(i: int) -> bytes:
    return i.to_bytes(4, "little")


def v(i: int) -> bytes:
    return i.to_bytes(8, "little")


def test_update_lookup_items(mp: MapPort) -> None:
    mp.update_batch([(k(1), v(10)), (k(2), v(20))])
    assert mp.lookup(k(1)) == v(10) and mp.lookup(k(3)) is None
    assert sorted(mp.items()) == [(k(1), v(10)), (k(2), v(20))]
    mp.update_batch([(k(1), v(11))])
    assert mp.lookup(k(1)) == v(11)
    assert (mp.key_size, mp.value_size, mp.max_entries) == (4, 8, 4)


def test_full_map_reports_how_far_it_got(mp: MapPort) -> None:
    mp.update_batch([(k(i), v(i)) for i in range(3)])
    with pytest.raises(MapWriteError) as e:
        mp.update_batch([(k(i), v(i)) for i in range(3, 7)])
    assert e.value.errno == errno.E2BIG and e.value.done == 1
    assert len(list(mp.items())) == 4


def test_delete_batch_and_missing_key(mp: MapPort) -> None:
    mp.update_batch([(k(i), v(i)) for i in range(3)])
    mp.delete_batch([k(0), k(1)])
    assert [kk for kk, _ in mp.items()] == [k(2)]
    with pytest.raises(MapWriteError) as e:
        mp.delete_batch([k(2), k(9)])
    assert e.value.errno == errno.ENOENT and e.value.done == 1
    assert list(mp.items()) == []


def test_wrong_sizes_rejected(mp: MapPort) -> None:
    with pytest.raises(MapWriteError) as e:
        mp.update_batch([(b"\x01\x02", v(1))])
    assert e.value.errno == errno.EINVAL


def test_flat_update_takes_bytes_bytearray_and_views(mp: MapPort) -> None:
    mp.update_batch_flat(k(1) + k(2), v(10) + v(20), 2)
    assert sorted(mp.items()) == [(k(1), v(10)), (k(2), v(20))]
    mp.update_batch_flat(bytearray(k(1)), memoryview(bytearray(v(11) + v(99)))[:8], 1)
    mp.update_batch_flat(k(3), memoryview(v(30)), 1)  # a read-only view
    assert sorted(mp.items()) == [(k(1), v(11)), (k(2), v(20)), (k(3), v(30))]
    mp.update_batch_flat(b"", b"", 0)
    assert len(list(mp.items())) == 3


def test_flat_update_full_map_reports_how_far_it_got(mp: MapPort) -> None:
    mp.update_batch_flat(b"".join(k(i) for i in range(3)), b"".join(v(i) for i in range(3)), 3)
    with pytest.raises(MapWriteError) as e:
        mp.update_batch_flat(b"".join(k(i) for i in range(3, 7)),
                             bytearray(b"".join(v(i) for i in range(3, 7))), 4)
    assert e.value.errno == errno.E2BIG and e.value.done == 1
    assert sorted(mp.items()) == [(k(i), v(i)) for i in range(4)]


@pytest.mark.parametrize(("keys", "values", "count"), [
    (k(1)[:2], v(1), 1),           # short key
    (k(1), v(1) + b"\0", 1),       # long value
    (k(1) + k(2), v(1) + v(2), 1),  # count disagrees with the buffers
    (k(1), v(1), 2),
])
def test_flat_update_wrong_sizes_rejected(mp: MapPort, keys: bytes, values: bytes,
                                          count: int) -> None:
    with pytest.raises(MapWriteError) as e:
        mp.update_batch_flat(keys, values, count)
    assert e.value.errno == errno.EINVAL and e.value.done == 0
    assert list(mp.items()) == []


def test_writers_on_several_threads_never_overfill(mp: MapPort) -> None:
    """The sync writes table chunks from a thread per CPU into one map."""
    import threading

    done: list[int] = []

    def writer(base: int) -> None:
        keys = bytearray().join(k(base + i) for i in range(200))
        vals = bytearray().join(v(base + i) for i in range(200))
        try:
            mp.update_batch_flat(keys, vals, 200)
        except MapWriteError as e:
            assert e.errno == errno.E2BIG
            done.append(e.done)
        else:
            done.append(200)

    threads = [threading.Thread(target=writer, args=(1000 * t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(done) == len(list(mp.items())) == mp.max_entries


@pytest.mark.parametrize("map_type", ["hash", "lru_hash", "array", "lpm_trie"])
def test_a_kernel_map_reads_back_every_entry_in_batches(map_type: str) -> None:
    """items() of a real map: many entries over several batches (a 4 KB value: 256 per
    batch), and map types without batch lookup (an LPM trie) walked key by key."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creating a kernel BPF map")
    import ctypes as ct

    from bpf import libbpf
    from bpf.mapstore import PinnedMap

    types = {"hash": 1, "lru_hash": 9, "array": 2, "lpm_trie": 11}
    n, vs = 1000, 4096
    if map_type == "lpm_trie":  # key: prefixlen + 4 bytes; needs BPF_F_NO_PREALLOC
        class Opts(ct.Structure):
            _fields_ = [("sz", ct.c_size_t), ("btf_fd", ct.c_uint32),
                        ("btf_key_type_id", ct.c_uint32), ("btf_value_type_id", ct.c_uint32),
                        ("btf_vmlinux_value_type_id", ct.c_uint32), ("inner_map_fd", ct.c_uint32),
                        ("map_flags", ct.c_uint32)]
        opts = Opts(sz=ct.sizeof(Opts), map_flags=1)
        fd = libbpf.check(libbpf.lib().bpf_map_create(11, b"rr_lpm", 8, vs, n,
                                                      ct.byref(opts)), "create lpm")
        keys = [(32).to_bytes(4, "little") + i.to_bytes(4, "big") for i in range(n)]
    else:
        # (an LRU map evicts before it is quite full: room to spare)
        fd = libbpf.map_create(types[map_type], "rr_items", 4, vs,
                               2 * n if map_type == "lru_hash" else n)
        keys = [i.to_bytes(4, "little") for i in range(n)]
    pm = PinnedMap(fd)
    try:
        want = {kb: i.to_bytes(4, "little") * (vs // 4) for i, kb in enumerate(keys)}
        pm.update_batch(list(want.items()))
        if map_type != "lpm_trie":  # these are read in batches, never walked
            pm.keys = lambda: pytest.fail("walked key by key")  # type: ignore[method-assign]
        got = list(pm.items())
        assert len(got) == n and dict(got) == want
    finally:
        pm.close()
