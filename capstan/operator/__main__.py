"""Run the operator: python -m capstan.operator [--namespace NS ...] [--standalone] [--priority N]."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="capstan-operator", description=__doc__)
    parser.add_argument("--namespace", "-n", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--standalone", action="store_true",
                        help="no peering: only one operator may run (tests, single replica)")
    parser.add_argument("--priority", type=int, default=0,
                        help="peering priority; give each replica a distinct one (kopf peering is not election)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import capstan.operator.handlers  # noqa: F401  (registers the handlers)
    import capstan.operator.phase_events  # noqa: F401

    asyncio.run(kopf.operator(
        standalone=args.standalone,
        priority=args.priority,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
    ))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
