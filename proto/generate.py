"""Generate the Python stubs of the wire API, or check that the committed ones are current.

    python proto/generate.py          # regenerate proto/tongban/v1/*_pb2*.py(i)
    python proto/generate.py --check  # exit 1 when a committed stub differs from a fresh one

Uses grpcio-tools' bundled protoc and mypy-protobuf's plugins, so nothing else is needed.

Both also hold the wire contract to its promise: fields and enum values are only added, never
renumbered, retyped or removed (signed command bytes stay in the logs for ever, and nodes of
different versions talk to each other). ``proto/wire_fields.json`` lists every field and enum
value as released; a .proto change that alters or drops one is refused, naming it. Generating
adds new fields to the list, and ``--check`` fails while the list lacks them.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "tongban" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
WIRE_FIELDS = PROTO_ROOT / "wire_fields.json"


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


def wire_fields(proto_root: Path = PROTO_ROOT) -> dict[str, str]:
    """Every field and enum value of the .proto files under ``proto_root``, by full name:
    ``"<number> <label> <type>"`` for a field, ``"<number>"`` for an enum value."""
    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.glob("tongban/v1/*.proto"))
    well_known = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptors.pb"
        args = ["protoc", f"-I{proto_root}", f"-I{well_known}", f"--descriptor_set_out={out}"]
        if protoc.main([*args, *protos]) != 0:
            raise SystemExit("protoc failed")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    fields: dict[str, str] = {}

    def enum(prefix: str, found: descriptor_pb2.EnumDescriptorProto) -> None:
        for value in found.value:
            fields[f"{prefix}.{found.name}.{value.name}"] = str(value.number)

    def message(prefix: str, found: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{found.name}"
        for field in found.field:
            label = descriptor_pb2.FieldDescriptorProto.Label.Name(field.label)
            kind = field.type_name.lstrip(".") or descriptor_pb2.FieldDescriptorProto.Type.Name(
                field.type
            )
            fields[f"{name}.{field.name}"] = f"{field.number} {label[6:].lower()} {kind}"
        for nested in found.nested_type:
            message(name, nested)
        for nested_enum in found.enum_type:
            enum(name, nested_enum)

    for file in files:
        for found in file.message_type:
            message(file.package, found)
        for found_enum in file.enum_type:
            enum(file.package, found_enum)
    return dict(sorted(fields.items()))


def breaking_changes(released: dict[str, str], current: dict[str, str]) -> list[str]:
    """What ``current`` changes of the ``released`` wire contract (additions are allowed)."""
    return [
        f"{name}: released as {was!r}, now {current[name]!r}"
        if name in current
        else f"{name}: released as {was!r}, now gone"
        for name, was in released.items()
        if current.get(name) != was
    ]


def _check_wire_fields(*, update: bool) -> bool:
    current = wire_fields()
    released = json.loads(WIRE_FIELDS.read_text(encoding="utf-8")) if WIRE_FIELDS.exists() else {}
    broken = breaking_changes(released, current)
    if broken:
        print(
            "the .proto files break the released wire contract (fields are only added, never "
            "renumbered, retyped or removed; add a new field instead):\n  " + "\n  ".join(broken),
            file=sys.stderr,
        )
        return False
    if current == released:
        return True
    if update:
        WIRE_FIELDS.write_text(json.dumps(current, indent=1, ensure_ascii=False) + "\n", "utf-8")
        print(f"{WIRE_FIELDS.name}: {len(current) - len(released)} new fields and values")
        return True
    new = sorted(set(current) - set(released))
    named = ", ".join(new[:5]) + (f" and {len(new) - 5} more" if len(new) > 5 else "")
    print(f"{WIRE_FIELDS.name} lacks {named}\nrun: python proto/generate.py", file=sys.stderr)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, change nothing")
    args = parser.parse_args(argv)
    if not _check_wire_fields(update=not args.check):
        return 1
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
