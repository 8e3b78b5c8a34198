"""Generate the GoBGP gRPC stubs from the .proto files Debian installs.

Run at install time (`make setup` calls `python -m bgp.gobgp.genstubs`); the output goes
to a git-ignored directory and is never committed. Idempotent: does nothing when the
stubs are newer than the .proto files.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROTO_DIRS = (
    Path("/usr/share/gocode/src/github.com/osrg/gobgp/api"),
    Path("/usr/share/gocode/src/github.com/osrg/gobgp/v3/api"),
)
PROTOS = ("gobgp.proto", "attribute.proto", "capability.proto")


def stubs_dir() -> Path:
    """Where the generated modules live (importable as flat top-level modules)."""
    env = os.environ.get("RACKROUTE_GOBGP_STUBS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".gen" / "gobgp"


def proto_dir() -> Path:
    """The directory holding GoBGP's .proto files."""
    for d in PROTO_DIRS:
        if all((d / p).exists() for p in PROTOS):
            return d
    raise FileNotFoundError(
        "GoBGP .proto files not found; install golang-github-osrg-gobgp-dev"
    )


def generate(out: Path | None = None) -> Path:
    """Generate stubs into `out` (default: stubs_dir()) unless they are up to date."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # install time only

    out = out or stubs_dir()
    src = proto_dir()
    newest = max((src / p).stat().st_mtime for p in PROTOS)
    marker = out / "gobgp_pb2_grpc.py"
    if marker.exists() and marker.stat().st_mtime >= newest:
        return out
    out.mkdir(parents=True, exist_ok=True)
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{src}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *PROTOS,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {src}")
    return out


def ensure_importable() -> None:
    """Put the stubs directory on sys.path so `import gobgp_pb2` works."""
    d = str(stubs_dir())
    if d not in sys.path:
        sys.path.insert(0, d)


if __name__ == "__main__":
    print(f"gobgp stubs: {generate()}")
