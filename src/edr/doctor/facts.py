"""What the doctor's probes found: plain records, no judgement (that is :mod:`edr.doctor.assess`).

Every probe (:mod:`edr.doctor.probes`) returns one of these; tests build
them by hand to drive the assessment, or replace a probe with one that
returns what they need.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import attrs

from edr.detect.sigma.rules import CompiledRule

#: ``LockFacts.state`` values.
LOCK_FREE: Final = "free"
LOCK_HELD: Final = "held"
LOCK_UNKNOWN: Final = "unknown"


class _ProbeLike(Protocol):
    ok: bool
    found: str
    problem: str
    fix: str


@attrs.frozen
class Finding:
    """One fact: whether it is as the agent needs it, what was found, and otherwise the problem and the fix."""

    ok: bool
    found: str
    problem: str = ""
    fix: str = ""

    @classmethod
    def of(cls, probe: _ProbeLike) -> Finding:
        """From a sensor's probe (:class:`edr.sources.ebpf.loader.Probe`, :mod:`edr.sources.etw.preflight`)."""
        return cls(probe.ok, probe.found, probe.problem, probe.fix)


@attrs.frozen
class LinuxHost:
    """The Linux host as the eBPF sensor sees it.

    ``sensor`` maps each precondition of the sensor (privileges, bcc, kernel
    headers, tracefs) to what ``edr run`` checks and what the sensor's
    loader checks, both of which must hold. ``capabilities`` names the
    effective capabilities held, of those the agent uses (None: unreadable).
    """

    kernel: Finding
    legacy_kernel: bool
    btf: Finding
    sensor: tuple[tuple[str, tuple[Finding, ...]], ...]
    capabilities: frozenset[str] | None
    euid: int


@attrs.frozen
class WindowsHost:
    """What can be known of a Windows host before the ETW session starts."""

    pywintrace: Finding
    pywin32: Finding
    admin: Finding


@attrs.frozen
class ConfigFacts:
    """The configuration: its file (None: built-in defaults), why it did not load, whether it is trusted.

    ``trust`` is None when not checked (not running as root: the agent
    checks its files only as root); ``tolerated`` marks a trust problem that
    ``agent.permissions = "warn"`` (from the environment or command line) lets through.
    """

    file: str | None
    error: str | None = None
    trust: Finding | None = None
    tolerated: bool = False


@attrs.frozen
class DirectoryFacts:
    """A directory the agent writes (``key`` names it), as it would find it at start.

    ``used`` False: this configuration does not write there (``why_unused``).
    ``exists`` False with no ``problem``: the agent would create it (0700).
    ``created``: the doctor created it, having been asked to.
    """

    key: str
    path: str
    role: str
    used: bool = True
    why_unused: str = ""
    exists: bool = True
    created: bool = False
    problem: str = ""
    fix: str = ""


@attrs.frozen
class LockFacts:
    """The instance lock, ``<agent.state_directory>/edr.lock``: free, held (by ``holder``) or unknown (``problem``)."""

    path: str
    state: str
    holder: int | None = None
    problem: str = ""


@attrs.frozen
class RulePathFacts:
    """A configured rule path (``key``): whether the agent can read it, and how many rule files it holds."""

    key: str
    path: str
    is_dir: bool = False
    rule_files: int = 0
    problem: str = ""
    fix: str = ""


@attrs.frozen
class RefusalFacts:
    """A rule path the rule-trust check refuses (see :mod:`edr.rule_trust`): ``message`` says why and the outcome."""

    key: str
    path: str
    message: str
    whole: bool


@attrs.frozen
class TrustFacts:
    """The rule-trust check: whether it applies (root), whether refusals take effect, what it refused."""

    checked: bool
    enforced: bool
    refusals: tuple[RefusalFacts, ...] = ()


@attrs.frozen
class PackFacts:
    """The installed rule packs: ``used`` when ``scanner.sigma_rules_path`` lists ``pack``.

    ``active`` is the active pack's id (None: none installed), ``rule_dirs``
    what the agent loads of it, ``problem`` what is wrong with the store or
    the active pack (``kind``: a :data:`edr.rulepacks.errors.KINDS` key).
    """

    used: bool
    store: str
    active: str | None = None
    installed: int = 0
    rule_dirs: tuple[str, ...] = ()
    rules: int = 0
    signature: str = ""
    problem: str = ""
    kind: str = ""


@attrs.frozen
class SigmaFacts:
    """The Sigma rules the agent would load: the compiled rules, and what failed.

    ``error`` is set when loading raised (a bug, reported rather than a traceback).
    """

    enabled: bool
    paths: tuple[str, ...] = ()
    files: int = 0
    rules: tuple[CompiledRule, ...] = ()
    correlations: int = 0
    rejections: tuple[tuple[str, str], ...] = ()
    cached: bool = False
    seconds: float = 0.0
    error: str = ""


@attrs.frozen
class ServiceFacts:
    """The service as its manager sees it (``status``: a :class:`edr.service.manager.ServiceStatus`),
    or why it could not be asked (``unavailable``: no service manager edr knows here)."""

    status: Any = None
    unavailable: str = ""
    problem: str = ""


@attrs.frozen
class SinkFacts:
    """One configured alert destination and whether it answered: ``reachable`` None when its transport has
    nothing to connect to (UDP: a datagram is never acknowledged)."""

    section: str  #: "syslog" or "webhook"
    destination: str  #: as logs show it (a webhook URL without its path and query)
    reachable: bool | None
    detail: str = ""


@attrs.frozen
class DoctorFacts:
    """Everything the probes found; a part left None was not probed (another platform, no configuration)."""

    platform: str
    config: ConfigFacts
    linux: LinuxHost | None = None
    windows: WindowsHost | None = None
    directories: tuple[DirectoryFacts, ...] = ()
    lock: LockFacts | None = None
    rule_paths: tuple[RulePathFacts, ...] = ()
    trust: TrustFacts | None = None
    pack: PackFacts | None = None
    sigma: SigmaFacts | None = None
    service: ServiceFacts | None = None
    #: the configured alert sinks (None: not probed)
    sinks: tuple[SinkFacts, ...] | None = None
    #: what active response needs: signal other users' processes (response.enabled and prevention_enabled)
    prevention: bool = False
