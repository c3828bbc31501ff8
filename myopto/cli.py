"""The `myopto` command line: `myopto roles`, `myopto cache ...`, `myopto logs ...`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from myopto.router import ROUTER


def roles_report(roles: Sequence[str] | None = None) -> str:
    """Each role's resolved backend, model and chain, as `myopto roles` prints it."""
    blocks = []
    for role in roles or ROUTER.roles():
        try:
            resolved, pipeline = ROUTER.chain(role)
        except Exception as error:  # noqa: BLE001 - a role that cannot be built, however, is reported
            blocks.append(f"{role}\n  error: {error}")
            continue
        chain = "\n".join("  " + line for line in pipeline.describe().splitlines())
        blocks.append(
            f"{role}\n  backend: {resolved.backend} (from {resolved.source['backend']})\n"
            f"  model:   {resolved.model} (from {resolved.source['model']})\n"
            + (f"  params:  {dict(resolved.params)}\n" if resolved.params else "")
            + _deployments_report(resolved, pipeline)
            + f"  chain:\n{chain}"
        )
    return "\n\n".join(blocks)


def _deployments_report(resolved: Any, pipeline: Any) -> str:
    """A role's deployments, one a line (backend, model, where, weight, limits; never a key), and
    its routing settings; '' for a role with one model."""
    routing = resolved.routing
    if not resolved.deployments or routing is None:
        return ""
    endpoints = {d.name: d.endpoint for d in getattr(pipeline.backend, "deployments", ())}
    lines = [
        f"  routing: {routing.strategy}; {routing.allowed_fails} failures within a minute rest a deployment "
        f"{routing.cooldown:g} s; when all rest: {routing.when_all_cooling}"
        + ("; the deployment is part of the cache key" if routing.deployment_in_key else "")
    ]
    for name, kind in (
        ("fallbacks", routing.fallbacks),
        ("context_window_fallbacks", routing.context_window_fallbacks),
    ):
        if kind:
            lines.append(f"  {name}: {', '.join(f'{source} -> {list(targets)}' for source, targets in kind.items())}")
    lines.append("  deployments:")
    for deployment in resolved.deployments:
        where = endpoints.get(deployment.name)
        details = [
            f"weight {deployment.weight:g}",
            f"rpm {deployment.rpm:g}" if deployment.rpm else "",
            f"tpm {deployment.tpm:g}" if deployment.tpm else "",
            f"context {deployment.context_window} tokens" if deployment.context_window else "",
        ]
        lines.append(
            f"    {deployment.name}: {deployment.backend} {deployment.model}"
            + (f" at {where}" if where else "")
            + f" ({', '.join(part for part in details if part)})"
        )
    return "\n".join(lines) + "\n"


def _cache_store(arguments: argparse.Namespace) -> Any:
    """The store the cache command works on: `--url`, else `--dir`, else the environment's."""
    from myopto.redis_connection import check_url
    from myopto.settings import default_cache_dir, read_environment
    from myopto.stores import open_store

    environment = read_environment("executor")
    namespace = arguments.namespace or environment.cache_namespace or "myopto"
    if arguments.url:
        return open_store(check_url(arguments.url, what="--url"), namespace=namespace)
    if arguments.dir:
        return open_store(str(arguments.dir))
    if environment.cache_url:
        return open_store(check_url(environment.cache_url), namespace=namespace)
    return open_store(str(default_cache_dir()))


def _cache_command(arguments: argparse.Namespace) -> int:
    """Run one `myopto cache` subcommand: 0 when all went through, 2 when anything was skipped,
    refused or could not be done (each said on stderr)."""
    from myopto.errors import MyoptoError

    try:
        store = _cache_store(arguments)
        if arguments.cache_command == "stats":
            stats = store.stats()
            print(json.dumps(stats, indent=2))
            if "warning" in stats:
                print(f"warning: {stats['warning']}", file=sys.stderr)
        elif arguments.cache_command == "clear":
            print(f"removed {store.clear()} entries from {store.location}")
            left = getattr(store, "refused_removals", 0)
            if left:
                print(
                    f"warning: left alone {left} file(s) named by entries that point outside the cache "
                    "directory or at files it never writes",
                    file=sys.stderr,
                )
                return 2
        elif arguments.cache_command == "export":
            return _export(store, arguments)
        elif arguments.cache_command == "import":
            return _import(store, arguments)
    except MyoptoError as error:
        print(f"myopto cache: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the export or import file itself
        print(f"myopto cache: {error.strerror or error}: {error.filename or arguments.file}", file=sys.stderr)
        return 2
    return 0


_SHOWN = 20  # problems listed one by one; past that, a count


def _export(store: Any, arguments: argparse.Namespace) -> int:
    from myopto.cache_transfer import export_file

    count, damaged = export_file(store, arguments.file, run=arguments.run)
    for damage in damaged[:_SHOWN]:
        print(f"skipped: {damage}", file=sys.stderr)
    if len(damaged) > _SHOWN:
        print(f"... and {len(damaged) - _SHOWN} more damaged entries", file=sys.stderr)
    skipped = f"; skipped {len(damaged)} damaged entries" if damaged else ""
    print(f"exported {count} entries to {arguments.file}{skipped}", file=sys.stderr)
    return 2 if damaged else 0


def _import(store: Any, arguments: argparse.Namespace) -> int:
    from myopto.cache_transfer import import_records

    report = import_records(store, arguments.file)
    refused = sorted(report.problems + report.conflicts)
    for number, problem in refused[:_SHOWN]:
        print(f"{arguments.file}:{number}: {problem}", file=sys.stderr)
    if len(refused) > _SHOWN:
        print(f"... and {len(refused) - _SHOWN} more refused lines", file=sys.stderr)
    notes = [
        f"{report.unchanged} already there",
        f"{len(report.conflicts)} conflicts kept the cached answer",
        f"{len(report.problems)} lines refused",
    ]
    if report.replaced_damaged:
        notes.append(f"{report.replaced_damaged} damaged entries replaced")
    print(f"imported {report.imported} entries into {store.location} ({', '.join(notes)})", file=sys.stderr)
    return 2 if report.refused else 0


def _logs_command(arguments: argparse.Namespace) -> int:
    from myopto import log_reader

    if arguments.logs_command == "summary":
        rows = log_reader.summarize(log_reader.read_log(arguments.file))
        if arguments.json:
            print(json.dumps(rows, indent=2))
        elif sys.stdout.isatty() and _rich_table(rows):
            pass
        else:
            print(log_reader.format_summary(rows))
        return 0
    if arguments.logs_command == "show":
        records = log_reader.select(
            log_reader.read_log(arguments.file),
            run=arguments.run,
            role=arguments.role,
            errors=arguments.errors,
            grep=arguments.grep,
            last=arguments.last,
        )
        if arguments.json:
            for record in records:
                print(json.dumps(record, ensure_ascii=False))
        else:
            print("\n\n".join(log_reader.format_call(record) for record in records))
        return 0
    try:
        for record in log_reader.follow(arguments.file, lines=arguments.lines, seconds=arguments.seconds):
            print(
                json.dumps(record, ensure_ascii=False) if arguments.json else log_reader.format_call(record), flush=True
            )
    except KeyboardInterrupt:
        pass
    return 0


def _rich_table(rows: list[dict[str, Any]]) -> bool:
    """Print the summary with rich when it is installed (terminals only); False when it is not."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    from myopto.log_reader import SUMMARY_HEADERS, summary_cells

    table = Table(*SUMMARY_HEADERS)
    for cells in summary_cells(rows):
        table.add_row(*cells)
    Console().print(table)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="myopto", description="myopto: inspect roles, chains and the cache.")
    commands = parser.add_subparsers(dest="command", required=True)
    roles = commands.add_parser("roles", help="print each role's resolved backend, model and chain")
    roles.add_argument("role", nargs="*", help="roles to show (default: executor, optimizer, metaoptimizer)")
    # --dir / --url / --namespace are accepted before or after the subcommand
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--dir", help="cache directory (default: MYOPTO_CACHE_DIR or the user cache dir)")
    where.add_argument("--url", help="a Redis URL instead of a directory (default: MYOPTO_CACHE_URL)")
    where.add_argument("--namespace", help="Redis key namespace (default: MYOPTO_CACHE_NAMESPACE or myopto)")
    after = argparse.ArgumentParser(add_help=False)
    for action in where._actions:
        after.add_argument(*action.option_strings, help=action.help, default=argparse.SUPPRESS)
    cache = commands.add_parser("cache", help="look after the cache (a directory or a Redis server)", parents=[where])
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    cache_commands.add_parser(
        "stats", parents=[after], help="entries and size; on Redis its memory and maxmemory-policy too"
    )
    cache_commands.add_parser("clear", parents=[after], help="remove every entry")
    export = cache_commands.add_parser("export", parents=[after], help="write entries as JSON lines")
    export.add_argument("file")
    export.add_argument("--run", help="only the entries recorded in this run")
    load = cache_commands.add_parser("import", parents=[after], help="read entries from JSON lines")
    load.add_argument("file")
    logs = commands.add_parser("logs", help="read a call log (MYOPTO_LOG_FILE)")
    logs_commands = logs.add_subparsers(dest="logs_command", required=True)
    summary = logs_commands.add_parser("summary", help="a table per run, role and model")
    summary.add_argument("file")
    summary.add_argument("--json", action="store_true", help="machine-readable output")
    show = logs_commands.add_parser("show", help="print calls readably (messages and answer when logged)")
    show.add_argument("file")
    show.add_argument("--run")
    show.add_argument("--role")
    show.add_argument("--errors", action="store_true", help="failed calls only")
    show.add_argument("--last", type=int, help="the last N matching calls")
    show.add_argument("--grep", help="calls whose record contains this text")
    show.add_argument("--json", action="store_true")
    tail = logs_commands.add_parser("tail", help="the last calls, then new ones as they are logged")
    tail.add_argument("file")
    tail.add_argument("--lines", type=int, default=10)
    tail.add_argument("--seconds", type=float, help="stop following after this long (default: until Ctrl-C)")
    tail.add_argument("--json", action="store_true")
    arguments = parser.parse_args(argv)
    if arguments.command == "roles":
        print(roles_report(arguments.role))
        return 0
    if arguments.command == "logs":
        return _logs_command(arguments)
    return _cache_command(arguments)


if __name__ == "__main__":
    sys.exit(main())
