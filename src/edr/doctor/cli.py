"""``edr doctor [--config PATH] [--json] [--rule ID] [--create]``: the command around :func:`edr.doctor.diagnose`.

Exit codes: 0 every check passed, 1 a check warned, 2 a check failed. With
``--rule ID``: 0 the rule can fire on this platform, 1 it is degraded, 2 it
never fires here (or no loaded rule has that id, or the configuration does
not load).

``python -m edr.doctor`` runs the same :func:`main`; ``edr doctor`` calls
:func:`add_arguments` for its parser and :func:`run` with the parsed arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Final

from edr.doctor.diagnose import diagnose, load_for_rules
from edr.doctor.report import EXIT_FAIL, EXIT_PASS, EXIT_WARN
from edr.doctor.rule_verdicts import CAN_FIRE, DEGRADED, explain, explanation_text

_RULE_EXIT: Final = {CAN_FIRE: EXIT_PASS, DEGRADED: EXIT_WARN}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options, on ``parser``."""
    parser.add_argument("--config", metavar="PATH",
                        help="configuration file (default: $EDR_CONFIG, else the installed one, as edr run)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rule", metavar="ID",
                        help="explain one Sigma rule (id or title): its logsource, the fields it reads, which of "
                             "them this platform fills, whether it can fire here")
    parser.add_argument("--create", action="store_true",
                        help="create missing directories (mode 0700) as the agent would at start; by default "
                             "the doctor creates and writes nothing")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m edr.doctor``."""
    parser = argparse.ArgumentParser(prog="edr doctor",
                                     description="Check that this host can run edr, and which rules can fire here.")
    add_arguments(parser)
    return parser


def _print(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def run_rule(args: argparse.Namespace) -> int:
    """``--rule ID``: explain every loaded rule with that id (or title)."""
    problem, rules, profile = load_for_rules(args.config)
    wanted = args.rule
    matches = [r for r in rules if r.meta.rule_id == wanted] or [r for r in rules if r.meta.title == wanted]
    if problem is not None or profile is None or not matches:
        reason = problem or f"no loaded Sigma rule has the id or title {wanted!r} ({len(rules)} rules loaded)"
        if args.json:
            _print(json.dumps({"rule": wanted, "error": reason, "exit_code": EXIT_FAIL}, indent=2))
        else:
            print(f"edr doctor: {reason}", file=sys.stderr)
        return EXIT_FAIL
    docs = [explain(rule, profile) for rule in matches]
    code = max(_RULE_EXIT.get(str(doc["verdict"]), EXIT_FAIL) for doc in docs)
    if args.json:
        _print(json.dumps({"rules": docs, "exit_code": code}, indent=2))
    else:
        _print("\n\n".join(explanation_text(doc) for doc in docs))
    return code


def run(args: argparse.Namespace) -> int:
    """``edr doctor`` with parsed arguments; the exit code."""
    if args.rule is not None:
        return run_rule(args)
    diagnosis = diagnose(args.config, create=args.create)
    report = diagnosis.report
    _print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """``python -m edr.doctor``."""
    return run(build_parser().parse_args(argv))
