"""Generate the Python stubs of the wire API, or check that the committed ones are current.

    python proto/generate.py          # regenerate proto/tongban/v1/*_pb2*.py(i)
    python proto/generate.py --check  # exit 1 when a committed stub differs from a fresh one

Uses grpcio-tools' bundled protoc and mypy-protobuf's plugins, so nothing else is needed.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "tongban" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto file into ``out_dir``; return the generated files."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    # mypy-protobuf's plugins are installed beside this interpreter, which may not be on PATH.
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / "tongban" / "v1").glob("*_pb2*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, change nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {path.name: path for path in generate(Path(tmp))}
        committed = {
            path.name: path
            for path in PACKAGE_DIR.iterdir()
            if path.name.endswith(GENERATED_SUFFIXES)
        }
        if args.check:
            drift = sorted(
                name
                for name in set(fresh) | set(committed)
                if name not in fresh
                or name not in committed
                or not filecmp.cmp(fresh[name], committed[name], shallow=False)
            )
            if drift:
                print(
                    "generated stubs drift from the .proto files: "
                    + ", ".join(drift)
                    + "\nrun: python proto/generate.py",
                    file=sys.stderr,
                )
                return 1
            print(f"stubs up to date ({len(fresh)} files)")
            return 0
        for path in committed.values():
            path.unlink()
        for name, path in fresh.items():
            shutil.copy(path, PACKAGE_DIR / name)
        print(f"generated {len(fresh)} files in {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
