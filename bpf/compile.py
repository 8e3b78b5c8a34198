"""Compile and load the datapath in a process of its own, pin its programs, and exit.

`Datapath.load(isolated=True)` (what the agent does) runs this instead of compiling in
its own process: bcc and LLVM cost a process about 150 MB that stays once loaded (R10
measures the agent). This child creates or adopts the pinned maps (stale pins replaced,
as bpf/loader.py does in process), loads the programs of the parts asked, pins each as
<pin_dir>/prog_<name> (bpf/progpin.py) and exits; the parent opens the pins.

  python -m bpf.compile CONFIG_JSON PART [PART ...]

Log lines (a pin recreated) go to stdout; on failure, stderr holds one line saying what
failed, then the compiler's or the verifier's log, and the exit status is 2.
"""

from __future__ import annotations

import logging
import sys

from bpf.loader import PARTS, Datapath, LoadError, config_from_json
from bpf.progpin import pin_programs


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any(p not in PARTS for p in argv[1:]):
        print(f"usage: python -m bpf.compile CONFIG_JSON PART [PART ...] "
              f"(parts: {', '.join(PARTS)})", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    dp = Datapath(config_from_json(argv[0]))
    try:
        dp.load(tuple(argv[1:]))
        pin_programs(dp)
    except LoadError as e:
        what = str(e).split("\n", 1)[0]
        print(f"{what}\n{e.log}", file=sys.stderr)
        return 2
    finally:
        dp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
