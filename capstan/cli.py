"""`capstan` command: one entry point for the operator, the workers, merge and CRD generation."""

from __future__ import annotations

import sys

COMMANDS = {
    "operator": ("capstan.operator.__main__", "run the operator (kopf)"),
    "worker": ("capstan.worker.__main__", "run a worker: recorder | pusher | panorama"),
    "merge": ("capstan.merge.cli", "merge single-stream recording files into MP4 (as the seed's script)"),
    "crds": ("capstan.api.crdgen", "write the CRDs generated from the API models"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        lines = [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: capstan <command> [args]\n\ncommands:\n" + "\n".join(lines), file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    import importlib

    module = importlib.import_module(COMMANDS[args[0]][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
