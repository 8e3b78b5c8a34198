"""`python -m tests.bench [NAME ...]`: run the benchmarks (all by default)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    chosen = [n for n in names if not argv or any(a in n for a in argv)]
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
