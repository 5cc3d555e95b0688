"""The necessary clauses of a rule are the same in every process, whatever its hash seed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.detect.sigma.conftest import rule

# Two clauses of equal cost (the same texts in two fields): the tie is broken by their needs, never by
# the last bit of a float sum taken in the set's iteration order (which follows the hash seed).
TIED = """\
selection:
  Image|endswith: ['\\\\regsvr32.exe', '\\\\rundll32.exe', '\\\\dllhost.exe']
  CommandLine|endswith: ['\\\\regsvr32.exe', '\\\\rundll32.exe', '\\\\dllhost.exe']
  ParentImage|endswith: ['\\\\regsvr32.exe', '\\\\rundll32.exe', '\\\\dllhost.exe', '\\\\cmd.exe']
filter:
  CommandLine: ''
condition: selection and not filter
"""

PRINT_CLAUSES = textwrap.dedent("""
    import sys
    from edr.detect.sigma.logsources import ALL_FED
    from edr.detect.sigma.ruleset import build_ruleset
    ruleset = build_ruleset([sys.argv[1]], placeholders=None, fed=ALL_FED, workers=1)
    print([[sorted(clause) for clause in r.clauses or ()] for r in ruleset.rules])
""")


def test_a_rules_clauses_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "tied.yml").write_text(rule(TIED, title="Tied"))
    seen = set()
    for seed in range(8):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        out = subprocess.run([sys.executable, "-c", PRINT_CLAUSES, str(rules)], env=env, check=True,
                             capture_output=True, text=True).stdout
        assert "CommandLine" in out and "Image" in out
        seen.add(out)
    assert len(seen) == 1, seen
