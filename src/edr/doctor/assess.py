"""From facts to verdicts: the doctor's judgement, one function per kind of fact (sans-IO).

Verdicts follow one rule: **fail** when the agent cannot start or something
it is configured to do will not happen (no sensor, a directory it cannot
write, configured rules it cannot read, a tampered rule pack); **warn** when
it runs with less than it could (rules refused for their permissions, a
capability that part of it needs, the service installed but not running);
**pass** otherwise, informational facts included (BTF, which the sensor
does not need; the instance lock held by a running agent; no systemd).
"""

from __future__ import annotations

from typing import Final

from edr.doctor.facts import (
    LOCK_FREE,
    LOCK_HELD,
    ConfigFacts,
    DirectoryFacts,
    DoctorFacts,
    Finding,
    LinuxHost,
    LockFacts,
    PackFacts,
    RulePathFacts,
    ServiceFacts,
    SigmaFacts,
    SinkFacts,
    TrustFacts,
    WindowsHost,
)
from edr.doctor.report import Check, Report, Verdict
from edr.doctor.rule_verdicts import RuleSummary, SensorProfile, summarize
from edr.service.systemd_unit import CAPABILITIES, LEGACY_BPF_CAPABILITY

#: Capabilities without which the sensor cannot load (on kernels of 5.8 and later).
SENSOR_CAPABILITIES: Final = ("CAP_BPF", "CAP_PERFMON")
MAX_LISTED: Final = 5


def _check(id_: str, section: str, title: str, finding: Finding, bad: Verdict = Verdict.FAIL) -> Check:
    if finding.ok:
        return Check(id_, section, title, Verdict.PASS, finding.found)
    return Check(id_, section, title, bad, finding.found, finding.problem, finding.fix)


# --- host ----------------------------------------------------------------------------------------------

def linux_host_checks(host: LinuxHost, *, prevention: bool) -> list[Check]:
    """Kernel, BTF, the sensor's preconditions, then the capabilities the agent keeps."""
    checks = [_check("host.kernel", "host", "kernel", host.kernel)]
    if host.btf.ok:
        checks.append(Check("host.btf", "host", "BTF", Verdict.PASS, host.btf.found))
    else:  # the sensor attaches to tracepoints and needs no BTF: a fact, not a problem
        checks.append(Check("host.btf", "host", "BTF", Verdict.PASS, f"{host.btf.found} ({host.btf.fix})"))
    for topic, findings in host.sensor:
        failed = [f for f in findings if not f.ok]
        found = findings[-1].found if findings else "not checked"
        if failed:
            # the loader's finding comes last and says more (it tells "not readable" from "not mounted")
            worst = failed[-1]
            checks.append(Check(f"host.{topic.replace(' ', '_')}", "host", topic, Verdict.FAIL, worst.found,
                                worst.problem, worst.fix))
        else:
            checks.append(Check(f"host.{topic.replace(' ', '_')}", "host", topic, Verdict.PASS, found))
    checks.extend(capability_checks(host, prevention=prevention))
    return checks


def capability_checks(host: LinuxHost, *, prevention: bool) -> list[Check]:
    """One check per capability the agent's unit keeps (edr.service.systemd_unit.CAPABILITIES)."""
    kept = (*CAPABILITIES, LEGACY_BPF_CAPABILITY) if host.legacy_kernel else CAPABILITIES
    checks = []
    who = f"uid {host.euid}"
    for name, why in kept:
        if host.capabilities is None:
            checks.append(Check(f"capabilities.{name}", "capabilities", name, Verdict.WARN, "unknown",
                                "the effective capabilities of this process cannot be read",
                                "run the doctor as the agent runs (root)"))
            continue
        if name in host.capabilities:
            checks.append(Check(f"capabilities.{name}", "capabilities", name, Verdict.PASS, f"held ({who}): {why}"))
            continue
        if name in SENSOR_CAPABILITIES and host.legacy_kernel:
            checks.append(Check(f"capabilities.{name}", "capabilities", name, Verdict.PASS,
                                f"not held ({who}): it does not exist before Linux 5.8, where CAP_SYS_ADMIN "
                                "stands in for it"))
            continue
        if name == "CAP_KILL" and not prevention:
            checks.append(Check(f"capabilities.{name}", "capabilities", name, Verdict.PASS,
                                f"not held ({who}); active response needs it only with "
                                "response.prevention_enabled, which is off"))
            continue
        required = name in SENSOR_CAPABILITIES or name == LEGACY_BPF_CAPABILITY[0]
        checks.append(Check(f"capabilities.{name}", "capabilities", name, Verdict.FAIL if required else Verdict.WARN,
                            f"not held ({who})", f"the agent needs it for: {why}",
                            "run the agent as root, or under the unit `edr service install` writes "
                            "(it keeps exactly these capabilities)"))
    return checks


def windows_host_checks(host: WindowsHost) -> list[Check]:
    """pywintrace, pywin32, administrator rights."""
    return [_check("host.pywintrace", "host", "pywintrace", host.pywintrace),
            _check("host.pywin32", "host", "pywin32", host.pywin32),
            _check("host.admin", "host", "administrator", host.admin)]


# --- configuration and paths ---------------------------------------------------------------------------

def config_checks(config: ConfigFacts) -> list[Check]:
    """The configuration file loads, and (as root) only root can change it."""
    source = config.file or "built-in defaults (no configuration file)"
    if config.error is not None:
        return [Check("configuration.load", "configuration", "configuration", Verdict.FAIL, source, config.error,
                      "correct the key named, then run `edr doctor` again")]
    checks = [Check("configuration.load", "configuration", "configuration", Verdict.PASS, f"loaded from {source}")]
    if config.file is None:
        return checks
    trust = config.trust
    if trust is None:
        checks.append(Check("configuration.trust", "configuration", "file permissions", Verdict.PASS,
                            "not checked: not running as root (the agent checks its files only as root)"))
    elif trust.ok:
        checks.append(Check("configuration.trust", "configuration", "file permissions", Verdict.PASS, trust.found))
    else:
        checks.append(Check("configuration.trust", "configuration", "file permissions",
                            Verdict.WARN if config.tolerated else Verdict.FAIL, trust.found, trust.problem,
                            trust.fix))
    return checks


def directory_check(facts: DirectoryFacts) -> Check:
    """One directory the agent writes."""
    id_ = f"paths.{facts.key}"
    if not facts.used:
        return Check(id_, "paths", facts.key, Verdict.PASS, f"not used: {facts.why_unused}")
    if facts.problem:
        return Check(id_, "paths", facts.key, Verdict.FAIL, facts.path,
                     f"the agent cannot write {facts.role} there: {facts.problem}", facts.fix)
    if facts.created:
        state = "created (mode 0700) and writable"
    elif facts.exists:
        state = "writable"
    else:
        state = "missing, the agent creates it (mode 0700) at start"
    return Check(id_, "paths", facts.key, Verdict.PASS, f"{facts.path}: {state}, for {facts.role}")


def lock_check(facts: LockFacts) -> Check:
    """The instance lock: free, or held by a running agent (both fine: the doctor says which)."""
    if facts.state == LOCK_FREE:
        return Check("paths.instance_lock", "paths", "instance lock", Verdict.PASS,
                     f"{facts.path}: free (no agent runs on this configuration)")
    if facts.state == LOCK_HELD:
        who = f"PID {facts.holder}" if facts.holder is not None else "a process whose PID is not readable"
        return Check("paths.instance_lock", "paths", "instance lock", Verdict.PASS,
                     f"{facts.path}: held by {who}, an agent running on this configuration (a second "
                     "`edr run` would exit 2)")
    return Check("paths.instance_lock", "paths", "instance lock", Verdict.FAIL, facts.path,
                 f"the lock cannot be checked: {facts.problem}",
                 "fix agent.state_directory as its own check says")


# --- rules ---------------------------------------------------------------------------------------------

def rule_path_check(facts: RulePathFacts) -> Check:
    """A configured rule path the agent must read."""
    id_ = f"rules.path.{facts.key}:{facts.path}"
    if facts.problem:
        return Check(id_, "rules", facts.key, Verdict.FAIL, facts.path, facts.problem, facts.fix)
    what = f"{facts.rule_files} rule file(s)" if facts.is_dir else "file"
    return Check(id_, "rules", facts.key, Verdict.PASS, f"{facts.path}: readable ({what})")


def trust_checks(facts: TrustFacts) -> list[Check]:
    """The rule-trust check's refusals (warn: the agent runs on the rest, or loads them anyway)."""
    if not facts.checked:
        return [Check("rules.trust", "rules", "rule permissions", Verdict.PASS,
                      "not checked: not running as root (the agent checks its rule files only as root)")]
    if not facts.refusals:
        return [Check("rules.trust", "rules", "rule permissions", Verdict.PASS,
                      "only root (or the agent's user) can change the rule files")]
    outcome = "refused: the agent does not load them" if facts.enforced else \
        'loaded anyway (agent.permissions = "warn")'
    listed = "; ".join(r.message for r in facts.refusals[:MAX_LISTED])
    more = f"; and {len(facts.refusals) - MAX_LISTED} more" if len(facts.refusals) > MAX_LISTED else ""
    return [Check("rules.trust", "rules", "rule permissions", Verdict.WARN,
                  f"{len(facts.refusals)} rule path(s) other users can change, {outcome}",
                  listed + more, "make them root's and not writable by group or others (each line names the "
                                 "command)")]


def pack_check(facts: PackFacts) -> Check:
    """The active rule pack and its integrity."""
    title = "rule pack"
    if not facts.used:
        return Check("rules.pack", "rules", title, Verdict.PASS,
                     "not used: scanner.sigma_rules_path does not list \"pack\"")
    if facts.problem:
        fix = ("reinstall it (`edr rules install SOURCE`) or go back to the previous one (`edr rules rollback`)"
               if facts.kind == "integrity" else "as the message says; `edr rules list` shows the installed packs")
        return Check("rules.pack", "rules", title, Verdict.FAIL, f"{facts.active or 'active pack'} in {facts.store}",
                     facts.problem, fix)
    if facts.active is None:
        return Check("rules.pack", "rules", title, Verdict.WARN, f"none installed in {facts.store}",
                     "only the bundled Sigma rules load",
                     "`edr rules update` downloads SigmaHQ's rules; `edr rules install sigma_all_rules.zip` "
                     "installs them offline")
    signature = f", signature {facts.signature}" if facts.signature else ""
    return Check("rules.pack", "rules", title, Verdict.PASS,
                 f"{facts.active} active ({facts.rules} rules at installation, {facts.installed} pack(s) "
                 f"installed{signature}); every file matches its manifest")


def sigma_check(facts: SigmaFacts, summary: RuleSummary | None) -> Check:
    """The Sigma rules: loaded, rejected, and how many can fire here (``summary``: their verdicts)."""
    title = "Sigma rules"
    if not facts.enabled:
        return Check("rules.sigma", "rules", title, Verdict.PASS, "not used: scanner.sigma_enabled is off")
    if facts.error or summary is None:
        return Check("rules.sigma", "rules", title, Verdict.FAIL, ", ".join(facts.paths) or "no path",
                     f"loading the rules failed, as it would when the agent starts: {facts.error}",
                     "fix what the rule-path checks above report; otherwise report this as a bug, with the paths")
    profile = summary.profile
    t = summary.totals
    found = (f"{len(facts.rules)} rules from {facts.files} file(s){' (compiled-rule cache)' if facts.cached else ''}"
             f": {t.can_fire} can fire, {t.degraded} degraded, {t.never} never fire on {profile.platform}; "
             f"{len(facts.rejections)} rejected, {facts.correlations} correlation(s)")
    if facts.rejections:
        listed = "; ".join(f"{path}: {reason}" for path, reason in facts.rejections[:MAX_LISTED])
        more = f"; and {len(facts.rejections) - MAX_LISTED} more" if len(facts.rejections) > MAX_LISTED else ""
        return Check("rules.sigma", "rules", title, Verdict.WARN, found, listed + more,
                     "`edr rules check` lists every rejection with its file and reason")
    if t.can_fire + t.degraded == 0:
        return Check("rules.sigma", "rules", title, Verdict.WARN, found,
                     f"no Sigma rule can fire on {profile.platform}",
                     f"add rules for {profile.platform} (`edr rules update` installs SigmaHQ's)")
    return Check("rules.sigma", "rules", title, Verdict.PASS, found)


# --- service -------------------------------------------------------------------------------------------

def service_check(facts: ServiceFacts) -> Check:
    """The service: running, installed but not running (warn), not installed or no manager (pass)."""
    title = "service"
    if facts.unavailable:
        return Check("service.state", "service", title, Verdict.PASS, facts.unavailable)
    if facts.problem:
        return Check("service.state", "service", title, Verdict.WARN, "unknown", facts.problem,
                     "see `edr service status`")
    status = facts.status
    if not status.installed:
        return Check("service.state", "service", title, Verdict.PASS,
                     f"not installed ({status.location}): the agent runs only when started by hand; "
                     "`edr service install` makes it a service")
    state = f"{status.active} ({status.sub_state})" if status.sub_state else str(status.active)
    found = f"installed ({status.location}), {state}, {status.enabled or 'unknown'} at boot"
    if status.main_pid:
        found += f", PID {status.main_pid}"
    if status.current is False:
        return Check("service.state", "service", title, Verdict.WARN, found,
                     "the installed unit differs from the one this edr generates",
                     "`edr service install` rewrites it")
    if not status.running:
        result = f" (last result: {status.result})" if status.result and status.result != "success" else ""
        return Check("service.state", "service", title, Verdict.WARN, found, f"the agent is not running{result}",
                     "`edr service start`; `journalctl -u edr.service` says why it stopped")
    return Check("service.state", "service", title, Verdict.PASS, found)


# --- the whole report ----------------------------------------------------------------------------------

# --- sinks ---------------------------------------------------------------------------------------------

def sink_checks(sinks: tuple[SinkFacts, ...]) -> list[Check]:
    """One check per alert destination: reachable (pass), unreachable (warn: alerts wait in its spool and
    nothing is lost up to the spool's size), not checkable (UDP, pass); none configured (pass)."""
    if not sinks:
        return [Check("sinks", "sinks", "alert sinks", Verdict.PASS,
                      "none configured: alerts go to the local ECS file only")]
    checks = []
    for sink in sinks:
        id_ = f"sinks.{sink.section}:{sink.destination}"
        title = f"{sink.section} {sink.destination}"
        if sink.reachable is None:
            checks.append(Check(id_, "sinks", title, Verdict.PASS, f"not checked: {sink.detail}"))
        elif sink.reachable:
            checks.append(Check(id_, "sinks", title, Verdict.PASS, "reachable"))
        else:
            key = f"{sink.section}.{'targets' if sink.section == 'syslog' else 'urls'}"
            checks.append(Check(id_, "sinks", title, Verdict.WARN, "unreachable",
                                f"cannot connect: {sink.detail} (alerts wait in its spool until it answers)",
                                f"check the receiver and {key}"))
    return checks


def build_report(facts: DoctorFacts, profile: SensorProfile | None, context: dict[str, object] | None = None,
                 ) -> Report:
    """Every check of ``facts``, in report order, and the rule verdicts under ``profile``."""
    report = Report(platform=facts.platform, context=dict(context or {}))
    if facts.linux is not None:
        report.extend(linux_host_checks(facts.linux, prevention=facts.prevention))
    if facts.windows is not None:
        report.extend(windows_host_checks(facts.windows))
    report.extend(config_checks(facts.config))
    report.extend([directory_check(d) for d in facts.directories])
    if facts.lock is not None:
        report.add(lock_check(facts.lock))
    report.extend([rule_path_check(p) for p in facts.rule_paths])
    if facts.trust is not None:
        report.extend(trust_checks(facts.trust))
    if facts.pack is not None:
        report.add(pack_check(facts.pack))
    if facts.sigma is not None and profile is not None:
        if facts.sigma.enabled and not facts.sigma.error:
            report.rules = summarize(facts.sigma.rules, profile)
        report.add(sigma_check(facts.sigma, report.rules))
    if facts.sinks is not None:
        report.extend(sink_checks(facts.sinks))
    if facts.service is not None:
        report.add(service_check(facts.service))
    return report
