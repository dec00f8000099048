"""`python -m mltag_artifact schema` prints the manifest JSON schema; `check DIR` validates."""

from __future__ import annotations

import argparse
import sys

from . import ArtifactError, load_artifact, manifest_json_schema


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mltag_artifact", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("schema", help="print the manifest JSON schema")
    check = sub.add_parser("check", help="validate an artifact directory (manifest + sha256)")
    check.add_argument("directory")
    args = parser.parse_args(argv)
    if args.cmd == "schema":
        sys.stdout.write(manifest_json_schema())
        return 0
    try:
        artifact = load_artifact(args.directory)
    except ArtifactError as e:
        print(f"invalid artifact:\n{e}", file=sys.stderr)
        return 1
    m = artifact.manifest
    print(f"ok: {m.name} {m.version}, {len(m.labels)} labels, {m.onnx.file} sha256 verified")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
