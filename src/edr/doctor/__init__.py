"""``edr doctor``: can this host run edr, and will each rule fire here? (issue #14, point 5)

Public API::

    from edr.doctor import diagnose, Probes
    diagnosis = diagnose("/etc/edr/config.toml", create=False)   # blocking
    print(diagnosis.report.to_text()); diagnosis.report.to_json(); diagnosis.report.exit_code  # 0/1/2

    from edr.doctor.cli import add_arguments, run                  # the CLI: parser options, run(args)

Modules, from data to I/O:

- ``sensor_fields``: which fields each live sensor fills, per category (a data
  table, checked against the real decoders by the tests)
- ``rule_verdicts``: can fire / degraded / never fires, per rule, per
  logsource (sans-IO); ``profiles``: the sensor profile a configuration sets up
- ``facts``: what probes find (plain records); ``assess``: facts -> checks
  with verdicts (sans-IO); ``report``: the report, its text, JSON and exit code
- ``probes``: the host, paths, lock, rules, pack and service, looked at as
  the agent would (each replaceable, see :class:`Probes`); ``diagnose``: runs
  them for one configuration; ``cli``: ``edr doctor``
"""

from __future__ import annotations

from edr.doctor.diagnose import Diagnosis, diagnose
from edr.doctor.probes import Probes
from edr.doctor.report import Check, Report, Verdict

__all__ = ["Check", "Diagnosis", "Probes", "Report", "Verdict", "diagnose"]
