"""`python -m tests.bench [NAME ...]`: run the benchmarks (all by default).

NAME is a benchmark id (`r3`, `r11`) or module name (`bench_r3`); matching is exact.
Options of one benchmark: run its module, e.g. `python -m tests.bench.bench_r3 --rounds 7`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = {a if a.startswith("bench_") else f"bench_{a}" for a in argv}
    unknown = wanted - set(names)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(names)}")
        return 2
    chosen = [n for n in names if not argv or n in wanted]
    failed = 0
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        mod = importlib.import_module(f"tests.bench.{name}")
        try:
            mod.main()
        except Exception as e:  # one benchmark failing does not stop the others
            print(f"{name}: FAILED: {e!r}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
