"""Command line: ``edr run | reload | replay | rules check|install|update|list|rollback|top | alerts verify |
ecs template | service VERB | config show|init | graph | version``.

Exit codes:

- 0 success, including an orderly stop on SIGINT/SIGTERM that wrote everything.
- 1 an actor failed, a check found problems, or a stop lost data: the stop
  timeout (``agent.stop_timeout_secs``, counted from the first signal) passed,
  or a second signal cancelled the stop, before every alert was written; the
  count of unwritten alerts is on standard error, in the operational log and
  in the final health record.
- 2 bad usage or configuration: an invalid key or value, a configuration file
  that cannot be read or that other users can change while running as root,
  or (``edr run``) another agent already running on the same configuration.
- 3 the live sensor cannot start here (the message says why and how to fix it).

``edr doctor`` reports a verdict instead: 0 every check passed, 1 one warned,
2 one failed (see :mod:`edr.doctor.cli`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import attrs
import trio

from edr import __version__
from edr.config import ConfigError, LoadedConfig, load_config
from edr.oplog import setup_logging

#: See the module's docstring: EXIT_FAILED also means "a stop left alerts unwritten".
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
log = logging.getLogger("edr")


def _positive(text: str) -> int:
    """An integer of at least 1 (``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="configuration file (default: $EDR_CONFIG, else the installed one if it exists)")
    p.add_argument("--log-level", choices=["trace", "debug", "info", "warn", "error"], help="override logging.level")
    con = p.add_mutually_exclusive_group()
    con.add_argument("--console", action="store_true", default=None, help="log to the console too")
    con.add_argument("--no-console", dest="console", action="store_false", help="do not log to the console")


def _permissions(p: argparse.ArgumentParser) -> None:
    p.add_argument("--permissions", choices=["enforce", "warn"],
                   help="override agent.permissions: as root, refuse (enforce) or only warn about "
                        "configuration and rule files other users can change")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (also used to document the CLI in the README).

    ``command``: the subcommand about to be parsed, when known; the doctor's
    options are then added only for the doctor (their module imports what
    only the doctor needs, a tenth of a replay's start).
    """
    parser = argparse.ArgumentParser(prog="edr", description="Endpoint detection and response agent.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the live agent in the foreground (Linux: eBPF; Windows: ETW)")
    _common(p)
    _permissions(p)

    p = sub.add_parser("reload", help="make the running agent reload its rules and reloadable keys (SIGHUP)")
    p.add_argument("--config", metavar="PATH",
                   help="the running agent's configuration file, which names its agent.state_directory (default: "
                        "$EDR_CONFIG, else the installed one if it exists)")

    p = sub.add_parser("replay", help="run the detection pipeline over recorded NDJSON/EVTX files")
    _common(p)
    _permissions(p)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="edr NDJSON events, .evtx, or evtx_dump JSON; a directory is searched recursively")
    p.add_argument("--output", metavar="DIR",
                   help="write the alert files to DIR, and the events and log of this replay too (unless "
                        "EDR__EVENTS__DIRECTORY / EDR__LOGGING__DIRECTORY say otherwise); without it alerts go to "
                        "standard output and nothing is written to the live agent's directories")
    p.add_argument("--stdout", action="store_true",
                   help="print alerts (NDJSON) to standard output too when --output is given")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--dedup", action="store_true",
                   help="fold identical alerts as the live agent does (alerts.dedup_*); by default a replay "
                        "writes one alert per matching record")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="processes that replay: this one, and N-1 that read and decode the EVTX files "
                        "ahead of it, in file order (default: the processors this process may use; 1: this "
                        "process only)")
    p.add_argument("--sigma", action="append", metavar="PATH",
                   help="Sigma rules path (repeatable; overrides scanner.sigma_rules_path)")

    rules = sub.add_parser("rules", help="rule tools")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    p = rsub.add_parser("check", help="load and compile rules; report loaded, inert and rejected per logsource")
    _common(p)
    _permissions(p)
    p.add_argument("paths", nargs="*", metavar="PATH", help="Sigma rule files/directories (default: configured)")
    p.add_argument("--strict", action="store_true", help="exit 1 on any rejected rule")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = rsub.add_parser("install", help="install and activate a Sigma rule pack from a directory, .zip or .tar.gz "
                                        "(no network)")
    _common(p)
    p.add_argument("source", metavar="SOURCE", help="e.g. SigmaHQ's sigma_all_rules.zip, or a checkout")
    p.add_argument("--strict", action="store_true", help="refuse the pack if any rule in it is rejected")
    p.add_argument("--verbose", action="store_true", help="list every rejected rule")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = rsub.add_parser("update", help="download rules.update_url (SigmaHQ's latest release) and install it")
    _common(p)
    p.add_argument("--url", help="download this pack instead of rules.update_url")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = rsub.add_parser("list", help="the installed rule packs, the active one marked")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = rsub.add_parser("rollback", help="re-activate the pack installed before the active one (or PACK)")
    _common(p)
    p.add_argument("pack", nargs="?", metavar="PACK", help="the id of an installed pack (see `edr rules list`)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = rsub.add_parser("top", help="the costliest Sigma rules of the running agent (from its [metrics] endpoint)")
    _common(p)
    p.add_argument("--listen", help="HOST:PORT of the agent's metrics endpoint (default: metrics.listen)")
    p.add_argument("--limit", type=int, default=20, help="rules shown at most (default 20)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("alerts", help="alert file tools")
    asub = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    p = asub.add_parser("verify", help="check the hash chain of alert files: the first edited, missing or "
                                       "reordered line")
    p.add_argument("files", nargs="+", metavar="FILE", help="alert files, oldest first")
    p.add_argument("--key-file", metavar="PATH", help="the chain's HMAC key (alerts.chain_key_file)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("ecs", help="ECS tools")
    esub = p.add_subparsers(dest="ecs_command", required=True, metavar="ACTION")
    p = esub.add_parser("template", help="print an Elasticsearch index template for edr's alerts")
    p.add_argument("--index-pattern", action="append", metavar="PATTERN",
                   help="index pattern the template applies to (repeatable; default edr-alerts-*)")
    p.add_argument("--dynamic", choices=["false", "strict"], default="false",
                   help="what Elasticsearch does with a key the template does not map")
    p.add_argument("--priority", type=int, default=200, help="the template's priority")

    p = sub.add_parser("service", help="install and manage edr as a system service (Linux: systemd)")
    p.add_argument("verb", choices=["install", "uninstall", "start", "stop", "restart", "status"])
    p.add_argument("--config", metavar="PATH",
                   help="the configuration the service runs with (default: the installed one)")
    p.add_argument("--executable", metavar="PATH", help="the edr the service runs (default: the installed one)")
    p.add_argument("--root", metavar="DIR", help="dry run: write the files under DIR, call nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    cfg = sub.add_parser("config", help="configuration tools")
    csub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    p = csub.add_parser("show", help="print the effective configuration with each value's source")
    _common(p)
    p = csub.add_parser("init", help="write a documented default configuration file")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    p = sub.add_parser("graph", help="print the actor graph of a mode")
    p.add_argument("--mode", default=None, help="linux, windows or replay (default: this platform's live mode)")
    p.add_argument("--format", choices=["text", "mermaid"], default="text")
    p.add_argument("--config", metavar="PATH", help="apply pipeline.capacities from this configuration")

    p = sub.add_parser("doctor", help="check that this host can run edr and which rules can fire here "
                                      "(exit 0 pass, 1 warn, 2 fail)")
    if command in (None, "doctor"):
        _doctor_arguments(p)

    sub.add_parser("version", help="print the version")
    return parser


def _load(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> LoadedConfig:
    overrides: dict[str, Any] = dict(extra or {})
    if getattr(args, "log_level", None):
        overrides["logging.level"] = args.log_level
    if getattr(args, "console", None) is not None:
        overrides["logging.console_output"] = args.console
    if getattr(args, "permissions", None):
        overrides["agent.permissions"] = args.permissions
    return load_config(getattr(args, "config", None), overrides=overrides)


def _load_trusted(args: argparse.Namespace, extra: dict[str, Any] | None = None, *,
                  logs: bool = True, setup: Callable[[LoadedConfig], None] | None = None) -> LoadedConfig:
    """:func:`_load` for the commands that load rules, then their logging (``logs``; ``setup`` instead
    of the configured one when given).

    As root the file must be trusted (else ConfigError: exit 2) before anything
    in it is used, the log directory included; a "warn" is logged once logging is up.
    """
    from edr.rule_trust import check_config_file

    loaded = _load(args, extra)
    warning = check_config_file(loaded)
    if setup is not None:
        setup(loaded)
    elif logs:
        _setup_logs(loaded)
    if warning:
        log.warning("%s", warning)
        if logs and not loaded.config.logging.console_output:  # else the console log shows it
            print(f"edr: {warning}", file=sys.stderr)
    return loaded


def _setup_logs(loaded: LoadedConfig, *, file: bool = True) -> None:
    lc = loaded.config.logging
    setup_logging(lc.level, lc.directory if file else None, lc.filename, lc.console_output)


def cmd_config(args: argparse.Namespace) -> int:
    """``edr config show|init``."""
    from edr.config_render import render_default_file, render_effective

    if args.config_command == "init":
        path = Path(args.path)
        if path.exists() and not args.force:
            print(f"edr: {path} exists (use --force to overwrite)", file=sys.stderr)
            return EXIT_USAGE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_default_file())
        print(f"wrote {path}")
        return EXIT_OK
    print(render_effective(_load(args)), end="")
    return EXIT_OK


def cmd_graph(args: argparse.Namespace) -> int:
    """``edr graph``."""
    from edr.platform import current
    from edr.runtime.graph import GraphError, render_mermaid, render_text
    from edr.wiring.graphs import mode_graph

    mode = args.mode or current().name
    try:
        graph = mode_graph(mode, load_config(args.config).config.pipeline.capacities if args.config else None)
    except (GraphError, FileNotFoundError, ConfigError) as exc:
        print(f"edr: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(render_mermaid(graph) if args.format == "mermaid" else render_text(graph))
    return EXIT_OK


def cmd_rules(args: argparse.Namespace) -> int:
    """``edr rules check|install|update|list|rollback``."""
    if args.rules_command == "check":
        return cmd_rules_check(args)
    if args.rules_command == "top":
        return cmd_rules_top(args)
    from edr.rulepacks import NullProgress, PackError, PackStore, install, list_packs, rollback, terminal_progress
    from edr.rulepacks import update as update_pack

    loaded = _load(args)
    setup_logging("warn", None, "", True)
    settings = loaded.config.rules
    if getattr(args, "strict", False):
        settings = attrs.evolve(settings, strict=True)
    store = PackStore(settings.store_directory)
    progress = NullProgress() if args.json else terminal_progress()
    placeholders = loaded.config.sigma.placeholders
    try:
        if args.rules_command == "install":
            result: Any = install(args.source, store, settings, progress, placeholders=placeholders)
        elif args.rules_command == "update":
            result = update_pack(store, settings, progress, url=args.url, placeholders=placeholders)
        elif args.rules_command == "list":
            result = list_packs(store)
        else:
            result = rollback(store, settings, to=args.pack)
    except PackError as exc:
        print(json.dumps(exc.to_json(), indent=2) if args.json else f"edr: rules {args.rules_command}: {exc}",
              file=sys.stdout if args.json else sys.stderr)
        return EXIT_USAGE if exc.kind == "config" else EXIT_FAILED
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        verbose = getattr(args, "verbose", False)
        print(result.to_text(verbose=verbose) if args.rules_command in ("install", "update") else result.to_text())
    return EXIT_OK


def cmd_rules_top(args: argparse.Namespace) -> int:
    """``edr rules top``: exit 3 when the agent's metrics cannot be read."""
    from edr.metrics.listen import MetricsUnavailable
    from edr.metrics.top import TopUnavailable, fetch_top, format_top

    listen = args.listen or _load(args).config.metrics.listen
    try:
        rules = fetch_top(listen)
    except (TopUnavailable, MetricsUnavailable) as exc:
        print(f"edr: rules top: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if args.json:
        print(json.dumps([{**attrs.asdict(r), "mean_us": r.mean_us} for r in rules[:args.limit]], indent=2))
    else:
        print(format_top(rules, args.limit))
    return EXIT_OK


def cmd_alerts(args: argparse.Namespace) -> int:
    """``edr alerts verify``."""
    from edr.alerts.verify import run_verify

    return run_verify(args.files, key_file=args.key_file, as_json=args.json)


def cmd_ecs(args: argparse.Namespace) -> int:
    """``edr ecs template``."""
    from edr.alerts.ecs_template import index_template

    try:
        template = index_template(args.index_pattern or ("edr-alerts-*",), dynamic=args.dynamic,
                                  priority=args.priority)
    except ValueError as exc:
        print(f"edr: ecs template: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(template, indent=2))
    return EXIT_OK


def cmd_service(args: argparse.Namespace) -> int:
    """``edr service VERB``: the agent as this platform's system service."""
    from edr.config import installed_layout
    from edr.service.manager import ServiceError, default_executable, perform, service_manager

    config_path = args.config or installed_layout().config_file
    loaded = load_config(args.config)
    try:
        executable = args.executable or default_executable()
        manager = service_manager(loaded.config, config_path=os.path.abspath(config_path), executable=executable,
                                  root=args.root)
    except ServiceError as exc:
        print(f"edr: service {args.verb}: {exc}", file=sys.stderr)
        return exc.exit_code
    text, code = perform(manager, args.verb, as_json=args.json)
    print(text, file=sys.stdout if code == 0 or args.json else sys.stderr)
    return code


def cmd_rules_check(args: argparse.Namespace) -> int:
    """``edr rules check``."""
    from edr.detect.sigma import rules_check
    from edr.rule_trust import RuleTrust, trusted_sigma_paths
    from edr.rulepacks.active import expand_pack

    setup_logging("warn", None, "", True)
    loaded = _load_trusted(args, logs=False)
    enforced = loaded.config.agent.permissions == "enforce"
    configured = args.paths or expand_pack(loaded.config).sigma_paths()
    paths, refusals = trusted_sigma_paths(configured, enforced=enforced,
                                          key="PATH" if args.paths else "scanner.sigma_rules_path")
    RuleTrust(loaded.config, refusals, enforced=enforced).log_refusals()
    text, data, code = rules_check(paths, placeholders=loaded.config.sigma.placeholders, strict=args.strict,
                                   progress=None if args.json else "terminal")
    print(json.dumps(data, indent=2) if args.json else text)
    # a rule path refused for its permissions is a problem this check found
    return code or (EXIT_FAILED if refusals and enforced else EXIT_OK)


class _ReplayBar:
    """A progress bar (a rulepacks Progress) of the bytes the replay source has read."""

    def __init__(self, source: Any, bar: Any) -> None:
        self.source, self.bar, self.shown = source, bar, 0
        bar.begin("replay", source.total_bytes(), "B")

    def update(self) -> None:
        done = self.source.bytes_read
        if done > self.shown:
            self.bar.advance(done - self.shown)
            self.shown = done

    async def run(self, sup: Any) -> None:
        """Update four times a second until cancelled (the supervisor's background task)."""
        while True:
            self.update()
            await trio.sleep(0.25)

    def close(self) -> None:
        self.update()
        self.bar.end()


def cmd_replay(args: argparse.Namespace) -> int:
    """``edr replay FILE...``: exit 0 when every file was read (alerts or not)."""
    # What the start makes (configuration, rule set, actors) lives until the command ends: no
    # cyclic collection while it is made, and frozen once made, so that neither the collections
    # while the pool reads nor the supervisor's full collection before the graph runs walk it
    # (0.15-0.2 s of collections for SigmaHQ's set otherwise).
    gc.disable()
    try:
        return _replay(args)
    finally:
        gc.enable()


def _replay(args: argparse.Namespace) -> int:
    from edr import progress
    from edr.health import log_health
    from edr.rule_trust import check_rules
    from edr.rulepacks.active import expand_pack
    from edr.runtime.process_pool import default_workers
    from edr.runtime.supervisor import Supervisor
    from edr.shutdown import hard_exit, report_unwritten
    from edr.sources.replay.formats import expand_inputs
    from edr.wiring.context import AgentContext
    from edr.wiring.graphs import mode_graph

    extra: dict[str, Any] = {"scanner.sigma_rules_path": args.sigma} if args.sigma else {}
    # the replay graph has no scanner: its YARA rules would be compiled for nothing
    extra["scanner.yara_enabled"] = False
    if args.output:
        # A replay is not live: its alerts, events and log go where it is told, never to the agent's files.
        # Only this invocation's own environment may send its events or log elsewhere.
        extra["alerts.directory"] = args.output
        for key in ("events.directory", "logging.directory"):
            section, _, name = key.partition(".")
            if f"EDR__{section.upper()}__{name.upper()}" not in os.environ:
                extra[key] = args.output
    else:
        extra["events.enabled"] = False
        if not args.log_level:
            extra["logging.level"] = "warn"
    def replay_logs(loaded: LoadedConfig) -> None:
        # with --output the log is a file there; without, standard error is all a replay writes to
        lc = loaded.config.logging
        setup_logging(lc.level, lc.directory if args.output else None, lc.filename,
                      lc.console_output or not args.output)

    loaded = _load_trusted(args, extra, setup=replay_logs)
    # the replay graph has no scanner: YARA rules are not loaded, so not checked
    trust = check_rules(expand_pack(loaded.config), yara=False,
                        sigma_key="--sigma" if args.sigma else "scanner.sigma_rules_path")
    trust.log_refusals(echo=not loaded.config.logging.console_output)
    loaded = LoadedConfig(config=trust.config, sources=loaded.sources, file=loaded.file)
    files, missing = expand_inputs(args.files)
    for f in missing:
        print(f"edr: replay: {f}: no such file or directory", file=sys.stderr)
    graph = mode_graph("replay", loaded.config.pipeline.capacities)
    workers = args.workers or default_workers()
    ctx = AgentContext.create(loaded.config, "replay", files=files, stdout=args.stdout or not args.output,
                              alerts_to_file=bool(args.output), dedup=args.dedup, workers=workers)
    sup = Supervisor(graph, ctx, stop_timeout=loaded.config.agent.stop_timeout_secs)
    shown = None
    if args.no_progress:
        progress.quiet()  # the rule compile's progress too
    elif not isinstance(terminal := progress.terminal_progress(), progress.NullProgress):
        shown = terminal
    started = time.monotonic()
    sup.build_actors()
    load_secs = time.monotonic() - started
    gc.freeze()
    gc.enable()
    source = sup.actors["source"]
    background = []
    bar = _ReplayBar(source, shown) if shown is not None else None
    if bar is not None:
        background.append(bar.run)
    code = trio.run(functools.partial(sup.run, background=background,
                                      on_stuck=hard_exit(sup, lambda: log_health(sup, final=True))))
    elapsed = time.monotonic() - started - load_secs
    log_health(sup, final=True)
    writer = sup.actors["alerts"]
    normalizer = sup.actors["normalizer"]
    if bar is not None:
        bar.close()
    lines = [
        f"replay: {len(ctx.options.files)} file(s), {source.records} records, "
        f"{normalizer.decoded} events, {normalizer.rejected} rejected, {writer.alerts} alerts "
        f"in {elapsed:.2f}s ({normalizer.decoded / max(elapsed, 1e-9):,.0f} events/s; rules loaded in {load_secs:.2f}s)"
    ]
    for rule, n in sorted(writer.by_rule.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {n:>7}  {rule}")
    lines.extend(f"replay: {path}: {reason}" for path, reason in source.failures)
    if sup.cancelled and not sup.failed:
        lines.append(f"replay: interrupted; the stop was cancelled ({sup.cancelled}) before the pipeline drained")
    elif sup.stopping:
        lines.append("replay: interrupted; every record read before the signal was processed")
    print("\n".join(lines), file=sys.stderr)
    report_unwritten(sup, echo=not loaded.config.logging.console_output)
    if code:
        return EXIT_FAILED
    return EXIT_FAILED if (missing or source.failed_files) else EXIT_OK


def _doctor_arguments(p: argparse.ArgumentParser) -> None:
    """The doctor's options (its own module, imported here only: it pulls in the rule compiler)."""
    from edr.doctor.cli import add_arguments

    add_arguments(p)


def cmd_doctor(args: argparse.Namespace) -> int:
    """``edr doctor``: its verdict is its exit code (a configuration that does not load is a failed check)."""
    from edr.doctor.cli import run

    return run(args)


def cmd_run(args: argparse.Namespace) -> int:
    """``edr run``: the live agent."""
    from edr.agent import run_live

    loaded = _load_trusted(args)
    return run_live(loaded)


def cmd_reload(args: argparse.Namespace) -> int:
    """``edr reload``: SIGHUP to the agent holding this configuration's instance lock; on Windows, the
    service's PARAMCHANGE control."""
    from edr.agent import signal_reload
    from edr.platform import current

    loaded = _load(args)
    if current().name == "windows":
        from edr.service.manager import ServiceError
        from edr.service.windows_manager import WindowsServiceManager

        try:
            report = WindowsServiceManager(str(loaded.file or "")).reload()
        except ServiceError as exc:
            print(f"edr: reload: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print("edr: " + "; ".join(report.steps))
        return EXIT_OK
    pid, message = signal_reload(loaded.config.agent.state_directory)
    print(f"edr: {message}", file=sys.stdout if pid is not None else sys.stderr)
    return EXIT_OK if pid is not None else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edr`` console script."""
    if argv is None:
        argv = sys.argv[1:]
    # the top level takes no option but --help: the first other word is the subcommand
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        if args.command == "version":
            print(f"edr {__version__}")
            return EXIT_OK
        if args.command == "doctor":
            return cmd_doctor(args)
        if args.command == "config":
            return cmd_config(args)
        if args.command == "graph":
            return cmd_graph(args)
        if args.command == "rules":
            return cmd_rules(args)
        if args.command == "alerts":
            return cmd_alerts(args)
        if args.command == "ecs":
            return cmd_ecs(args)
        if args.command == "service":
            return cmd_service(args)
        if args.command == "replay":
            global _replayed
            _replayed = True
            return cmd_replay(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "reload":
            return cmd_reload(args)
    except ConfigError as exc:
        print(f"edr: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_USAGE


def entry() -> None:
    """``python -m edr``; a reader of standard output that goes away (``edr graph | head``) ends it quietly.

    ``edr replay`` ends without the interpreter's teardown (:func:`_exit_without_teardown`).
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would flush stdout again at exit and print a second traceback: point it at nothing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_OK
    if _replayed:
        _exit_without_teardown(code)
    sys.exit(code)


#: Set once ``edr replay`` has run in this process (its exit skips the teardown).
_replayed = False


def _exit_without_teardown(code: int) -> NoReturn:
    """Exit as the interpreter does, in its order, less the teardown of every module and object.

    Kept: waiting for the threads that are not daemons and what threading runs then (the reader
    pool's shutdown, which reaps its processes), the atexit functions (logging's flush and close,
    multiprocessing's), flushing standard output and error. Skipped: freeing one by one what the
    modules hold, for a replay with all of SigmaHQ the rule set and its indexes, 0.05-0.1 s of CPU
    (main thread, perf stat, 2 x 5 runs each way). The replay's writers have closed their files by then.
    """
    shutdown = getattr(threading, "_shutdown", None)  # what Py_FinalizeEx runs first (private, CPython)
    if shutdown is None:
        sys.exit(code)  # an interpreter without it: the ordinary exit, teardown included
    try:
        shutdown()
    except Exception:  # as at the interpreter's own exit: reported, never the exit code (a pool whose worker died)
        print("Exception ignored while the threads shut down:", file=sys.stderr)
        traceback.print_exc()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a reader that went away, a stream closed: nothing more can be said there
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
