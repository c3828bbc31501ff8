"""The `myopto` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from myopto.router import ROUTER


def roles_report(roles: Sequence[str] | None = None) -> str:
    """Each role's resolved backend, model and chain, as `myopto roles` prints it."""
    blocks = []
    for role in roles or ROUTER.roles():
        try:
            resolved, pipeline = ROUTER.chain(role)
        except Exception as error:  # a role that cannot be built is reported, not fatal
            blocks.append(f"{role}\n  error: {error}")
            continue
        chain = "\n".join("  " + line for line in pipeline.describe().splitlines())
        blocks.append(
            f"{role}\n  backend: {resolved.backend} (from {resolved.source['backend']})\n"
            f"  model:   {resolved.model} (from {resolved.source['model']})\n"
            + (f"  params:  {dict(resolved.params)}\n" if resolved.params else "")
            + f"  chain:\n{chain}"
        )
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="myopto", description="myopto: inspect roles and chains.")
    commands = parser.add_subparsers(dest="command", required=True)
    roles = commands.add_parser("roles", help="print each role's resolved backend, model and chain")
    roles.add_argument("role", nargs="*", help="roles to show (default: executor, optimizer, metaoptimizer)")
    arguments = parser.parse_args(argv)
    if arguments.command == "roles":
        print(roles_report(arguments.role))
    return 0


if __name__ == "__main__":
    sys.exit(main())
