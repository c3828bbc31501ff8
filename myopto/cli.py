"""The `myopto` command line: `myopto roles`, `myopto cache ...`."""

from __future__ import annotations

import argparse
import json
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


def _cache_command(arguments: argparse.Namespace) -> int:
    from myopto.cache_store import disk_store
    from myopto.cache_transfer import export_records, import_records
    from myopto.settings import default_cache_dir

    store = disk_store(arguments.dir or default_cache_dir())
    if arguments.cache_command == "stats":
        print(json.dumps(store.stats(), indent=2))
    elif arguments.cache_command == "clear":
        print(f"removed {store.clear()} entries from {store.directory}")
    elif arguments.cache_command == "export":
        with open(arguments.file, "w", encoding="utf-8") as out:
            count = export_records(store, out, run=arguments.run)
        print(f"exported {count} entries to {arguments.file}", file=sys.stderr)
    elif arguments.cache_command == "import":
        print(f"imported {import_records(store, arguments.file)} entries into {store.directory}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="myopto", description="myopto: inspect roles, chains and the cache.")
    commands = parser.add_subparsers(dest="command", required=True)
    roles = commands.add_parser("roles", help="print each role's resolved backend, model and chain")
    roles.add_argument("role", nargs="*", help="roles to show (default: executor, optimizer, metaoptimizer)")
    cache = commands.add_parser("cache", help="look after the disk cache")
    cache.add_argument("--dir", help="cache directory (default: MYOPTO_CACHE_DIR or the user cache dir)")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_commands.add_parser("stats", help="entries, size on disk, hits and misses of this process")
    cache_commands.add_parser("clear", help="remove every entry")
    export = cache_commands.add_parser("export", help="write entries as JSON lines")
    export.add_argument("file")
    export.add_argument("--run", help="only the entries recorded in this run")
    load = cache_commands.add_parser("import", help="read entries from JSON lines")
    load.add_argument("file")
    arguments = parser.parse_args(argv)
    if arguments.command == "roles":
        print(roles_report(arguments.role))
        return 0
    return _cache_command(arguments)


if __name__ == "__main__":
    sys.exit(main())
