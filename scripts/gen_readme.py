"""Regenerate the README's generated sections (configuration reference, CLI, actor graphs of every mode).

`python scripts/gen_readme.py` rewrites README.md in place; `--check` exits 1
if it is stale (a test runs the check, so the reference never drifts from
conf/config.toml and the code).

`--rules-check` also regenerates (with `--check`: also verifies) the
`rules-check` section: the table of `edr rules check ../shared/sigma`
(SigmaHQ's rules beside the repository). It takes a cold rule load, ~15 s, and
needs ../shared, so the plain run and the plain `--check` (the one CI runs)
leave that section exactly as it is; `--rules-check` without ../shared/sigma
exits 2 and changes nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from edr.cli import build_parser
from edr.config_render import render_default_file, render_reference_markdown
from edr.runtime.graph import render_mermaid
from edr.wiring.graphs import mode_graph

ROOT = Path(__file__).resolve().parents[1]


def cli_reference() -> str:
    """Every command's --help, as the README shows it."""
    parser = build_parser()
    out = ["```", parser.format_help().rstrip(), "```"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        nested = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            for nname, np in nested[0].choices.items():
                out += ["", f"`edr {name} {nname}`", "```", np.format_help().rstrip(), "```"]
        else:
            out += ["", f"`edr {name}`", "```", p.format_help().rstrip(), "```"]
    return "\n".join(out)


SIGMAHQ = ROOT.parent / "shared" / "sigma"


def rules_check_section() -> str:
    """`edr rules check ../shared/sigma` as the README shows it: totals, then the full table."""
    from edr.detect.sigma import rules_check

    os.chdir(ROOT)  # the table names files relative to the repository, as the command does
    text, data, _code = rules_check([os.path.relpath(SIGMAHQ)], placeholders={}, strict=False)
    lines = text.splitlines()
    return "\n".join([
        f"Loaded **{data['loaded']:,}**, inert **{data['inert']:,}**, rejected **{data['rejected']}**, "
        f"compile failures **{data['compile_failures']}** (of {data['files']:,} files).",
        "",
        "<details><summary>The whole table: <code>edr rules check ../shared/sigma</code></summary>",
        "",
        "```",
        *lines,
        "```",
        "</details>",
    ])


def sections(rules: bool = False) -> dict[str, str]:
    """Marker name -> generated body (``rules``: the rules-check section too)."""
    out = {"config": render_reference_markdown(), "cli": cli_reference()}
    if rules:
        out["rules-check"] = rules_check_section()
    for mode in ("linux", "windows", "replay"):
        out[f"graph-{mode}"] = "```mermaid\n" + render_mermaid(mode_graph(mode)) + "\n```"
    return out


def render(text: str, rules: bool = False) -> str:
    """``text`` with every generated section replaced."""
    for name, body in sections(rules).items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- BEGIN {name} --> section")
        text = pattern.sub(lambda m, b=body: m.group(1) + b + "\n" + m.group(2), text)
    return text


def main() -> int:
    """Rewrite (or --check) README.md and conf/config.toml."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--rules-check", action="store_true",
                    help=f"also regenerate (with --check: verify) the table of {SIGMAHQ}")
    args = ap.parse_args()
    if args.rules_check and not SIGMAHQ.is_dir():
        print(f"--rules-check: {SIGMAHQ} not found", file=sys.stderr)
        return 2
    readme = ROOT / "README.md"
    conf = ROOT / "conf" / "config.toml"
    new_readme, new_conf = render(readme.read_text(), args.rules_check), render_default_file()
    if args.check:
        stale = [str(p) for p, new in ((readme, new_readme), (conf, new_conf)) if p.read_text() != new]
        if stale:
            print(f"stale: {', '.join(stale)}; run python scripts/gen_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new_readme)
    conf.write_text(new_conf)
    return 0


if __name__ == "__main__":
    sys.exit(main())
