"""Compile and load eBPF programs in a process of its own, and exit.

`Datapath.load(isolated=True)` (what the agent does) runs this instead of compiling in
its own process: bcc and LLVM cost a process about 150 MB that stays once loaded (R10
measures the agent). This child creates or adopts the pinned maps (stale pins replaced,
as bpf/loader.py does in process), loads the programs of the parts asked, pins each as
<pin_dir>/prog_<name> (bpf/progpin.py) and exits; the parent opens the pins.

  python -m bpf.compile CONFIG_JSON PART [PART ...]

`load_text_isolated` (bpf/loader.py) runs the other form for a program that pins nothing
(the per-node tunnel): the child loads the text and hands the parent its program and map
fds over a Unix socket (SCM_RIGHTS), which keep them alive after the child exits.

  python -m bpf.compile --fds SOCKET_FD FUNCS_JSON < program text

Log lines (a pin recreated) go to stdout; on failure, stderr holds one line saying what
failed, then the compiler's or the verifier's log, and the exit status is 2.
"""

from __future__ import annotations

import json
import logging
import socket
import sys

from bpf.loader import PARTS, Datapath, LoadError, config_from_json, load_text
from bpf.progpin import pin_programs


def send_fds(sock_fd: int, funcs_json: str, text: str) -> int:
    """Load text's funcs ({name: [prog type, attach type]}) and send the programs' and
    the maps' fds, named, to the parent over the socket sock_fd."""
    from bpf.pins import declared_maps

    funcs = {k: (int(v[0]), int(v[1])) for k, v in json.loads(funcs_json).items()}
    try:
        mod, fds = load_text(text, funcs)
    except LoadError as e:
        what = str(e).split("\n", 1)[0]
        print(f"{what}\n{e.log}", file=sys.stderr)
        return 2
    named = dict(fds)
    for d in declared_maps(mod):
        named[d.name] = mod[d.name.encode()].map_fd
    with socket.socket(fileno=sock_fd) as s:
        names = sorted(named)
        socket.send_fds(s, [json.dumps(names).encode()], [named[n] for n in names])
    mod.cleanup()
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--fds"] and len(argv) == 3:
        return send_fds(int(argv[1]), argv[2], sys.stdin.read())
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
