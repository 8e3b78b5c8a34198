"""The pinned maps of a datapath instance at a glance (`rackroute service maps`): each
map's type, entries in use against its capacity, and the kernel memory it holds, and
the state of the two address filters (rr_vips, rr_replies: armed or not, bits set).

A full conntrack evicts live flows, a full service or Maglev map refuses new services:
this is where an operator sees it coming. Hash-type maps are counted entry by entry (in
batches; by key alone where the values are large, as Maglev tables are); an array is
always full by construction, so its entries are its capacity (the filters count their
set bits instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bpf import maps as m
from bpf.mapstore import PinnedMap

TYPE_NAMES = {1: "hash", 2: "array", 9: "lru_hash", 11: "lpm_trie"}
ARRAY = 2
LARGE_VALUE = 256  # bytes: counted by key alone above this


@dataclass(frozen=True)
class MapStat:
    name: str
    type: str
    entries: int
    max_entries: int
    memlock: int  # bytes, as the kernel accounts them

    @property
    def fill(self) -> float:
        return self.entries / self.max_entries if self.max_entries else 0.0


@dataclass(frozen=True)
class FilterStat:
    name: str
    armed: bool
    bits: int  # buckets marked


def memlock(fd: int) -> int:
    """The kernel's memlock accounting of the BPF object (map or program) fd, in bytes."""
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("memlock:"):
            return int(line.split()[1])
    return 0


def _count(pm: PinnedMap) -> int:
    if pm.meta.type == ARRAY:
        return pm.max_entries
    if pm.value_size > LARGE_VALUE:
        keys = pm.keys()  # a walk by key (PinnedMap is no mapping)
        return sum(1 for _ in keys)
    return sum(1 for _ in pm.items())


def map_stats(pin_dir: Path) -> list[MapStat]:
    """Every map pinned in pin_dir (programs skipped), by name."""
    out: list[MapStat] = []
    for p in sorted(pin_dir.iterdir()):
        if p.name.startswith("prog_"):
            continue
        try:
            pm = PinnedMap.open(str(p))
        except OSError:
            continue  # not a map
        try:
            out.append(MapStat(p.name, TYPE_NAMES.get(pm.meta.type, str(pm.meta.type)),
                               _count(pm), pm.max_entries, memlock(pm.fd)))
        finally:
            pm.close()
    return out


def filter_stats(pin_dir: Path) -> list[FilterStat]:
    """The address filters present in pin_dir."""
    out: list[FilterStat] = []
    for name, armed_at in (("rr_vips", m.VIPS_ARMED), ("rr_replies", m.REPLIES_ARMED)):
        path = pin_dir / name
        if not path.exists():
            continue
        pm = PinnedMap.open(str(path))
        try:
            words = [int.from_bytes(v, "little") for _, v in pm.items()]
        finally:
            pm.close()
        armed = len(words) > armed_at and words[armed_at] != 0
        out.append(FilterStat(name, armed, sum(bin(w).count("1") for w in words[:armed_at])))
    return out


def human(n: int) -> str:
    """Bytes as KiB / MiB."""
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.0f} KiB"
    return f"{n} B"


def render(stats: list[MapStat], filters: list[FilterStat]) -> str:
    rows = [("MAP", "TYPE", "ENTRIES", "MAX", "FILL", "MEMORY")]
    rows += [(s.name, s.type, str(s.entries), str(s.max_entries), f"{s.fill:.0%}",
              human(s.memlock)) for s in stats]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    total = sum(s.memlock for s in stats)
    lines.append(f"{len(stats)} maps, {human(total)}")
    for f in filters:
        state = "armed" if f.armed else "NOT armed (every packet takes the full path)"
        lines.append(f"{f.name}: {state}, {f.bits} buckets marked")
    return "\n".join(lines)
