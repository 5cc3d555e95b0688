"""The doctor's probes: look at the host, the configured paths, the rules and the service; judge nothing.

Each function returns a record of :mod:`edr.doctor.facts`. They look the
way the agent would at start, through the same code where there is one
(the sensors' preflight probes, :class:`~edr.platform.private_files.PrivateDir`,
:mod:`edr.rule_trust`, :class:`~edr.rulepacks.store.PackStore`, the service
manager), and change nothing unless told to (``create``): a missing
directory is reported as one the agent would create, the compiled-rule
cache is read, never written.

:class:`Probes` bundles them so that a test can replace any one.
"""

from __future__ import annotations

import importlib.util
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from edr.config import PACK, Config, LoadedConfig
from edr.doctor.facts import (
    LOCK_FREE,
    LOCK_HELD,
    LOCK_UNKNOWN,
    DirectoryFacts,
    Finding,
    LinuxHost,
    LockFacts,
    PackFacts,
    RefusalFacts,
    RulePathFacts,
    ServiceFacts,
    SigmaFacts,
    SinkFacts,
    TrustFacts,
    WindowsHost,
)
from edr.platform import current
from edr.platform.private_files import PrivateDir, UnsafePath, check_trusted

if TYPE_CHECKING:
    from edr.detect.sigma.ruleset import RuleSet


def _who() -> str:
    return f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "this user"


# --- host ----------------------------------------------------------------------------------------------

def probe_linux_host() -> LinuxHost:
    """The kernel, BTF, what ``edr run`` and the eBPF loader check, and this process's capabilities."""
    from edr.agent import linux_preflight
    from edr.service.systemd_unit import UnitError, kernel_lacks_bpf_capabilities
    from edr.sources.ebpf import loader

    release = os.uname().release
    try:
        legacy = kernel_lacks_bpf_capabilities(release)
    except UnitError:
        legacy = False
    topics: dict[str, list[Finding]] = {}
    for probe in (*linux_preflight(), *loader.preflight_probes()):
        topics.setdefault(probe.name, []).append(Finding.of(probe))
    return LinuxHost(kernel=Finding.of(loader.probe_kernel_version(release)), legacy_kernel=legacy,
                     btf=Finding.of(loader.probe_btf()),
                     sensor=tuple((name, tuple(found)) for name, found in topics.items()),
                     capabilities=_held(loader.effective_capabilities(), loader.CAPABILITY_BITS),
                     euid=os.geteuid())


def probe_compiled_sensor(config: Config) -> Finding:
    """Whether a cached build of the sensor matching this kernel and ``[sensor]`` exists (read, never written).

    Informational (always ok): without one the next start compiles the
    sensor in a child, which needs bcc and the kernel headers and takes seconds.
    """
    from edr.sources.ebpf import loader, objcache

    cfg = config.sensor
    try:
        flags = loader.cflags(frozenset(cfg.families), cfg.max_args, cfg.max_arg_bytes, cfg.page_count)
    except ValueError as exc:
        return Finding(True, f"not checked: {exc}")
    hit, why = objcache.status(config.sigma.cache_dir, flags)
    if hit:
        return Finding(True, why)
    return Finding(True, f"{why}: the next start compiles it in a child (bcc and kernel headers, seconds)")


def _held(mask: int | None, bits: dict[str, int]) -> frozenset[str] | None:
    """The names in ``bits`` whose bit is set in the capability ``mask`` (None: unreadable)."""
    return None if mask is None else frozenset(name for name, bit in bits.items() if mask & (1 << bit))


def probe_windows_host() -> WindowsHost:
    """pywintrace, pywin32 and administrator rights (import-safe anywhere)."""
    from edr.sources.etw import preflight

    return WindowsHost(pywintrace=Finding.of(preflight.probe_pywintrace()),
                       pywin32=Finding.of(preflight.probe_pywin32()), admin=Finding.of(preflight.probe_admin()))


# --- directories and the instance lock ----------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    return probe


def _writable(path: Path) -> str:
    """Why this process cannot create files in the existing directory ``path``, or ""."""
    if os.access(path, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        return ""
    readonly = getattr(os, "ST_RDONLY", 0)
    try:
        if readonly and os.statvfs(path).f_flag & readonly:
            return "it is on a read-only file system"
    except OSError:
        pass
    return f"it is not writable by {_who()}"


def _creatable(path: Path) -> str:
    """Why the agent could not create the missing directory ``path`` (as PrivateDir would), or ""."""
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():
        return f"{ancestor} is not a directory"
    unwritable = _writable(ancestor)
    if unwritable:
        return f"it cannot be created: {unwritable.replace('it is', f'{ancestor} is', 1)}"
    try:
        check_trusted(ancestor)
    except UnsafePath as exc:
        st = os.stat(ancestor)
        # PrivateDir accepts a sticky world-writable directory (/tmp) above one it creates, as its parents
        if not (st.st_mode & stat.S_ISVTX and st.st_uid in (0, os.geteuid())):
            return str(exc)
        if ancestor.parent != ancestor:
            try:
                check_trusted(ancestor.parent)
            except UnsafePath as parent_exc:
                return str(parent_exc)
    return ""


def probe_directory(key: str, path: str, role: str, *, create: bool = False) -> DirectoryFacts:
    """``path`` as the agent's :class:`PrivateDir` would find it; created (0700) only with ``create``."""
    absolute = Path(os.path.abspath(path))
    private = PrivateDir(absolute, create=False)
    try:
        private.fd()
    except FileNotFoundError:
        pass  # the links on the way were checked; the directory is missing
    except OSError as exc:  # UnsafePath says what is wrong and the fix
        return DirectoryFacts(key, str(absolute), role, problem=str(exc), fix=_directory_fix(key, exc))
    else:
        problem = _writable(absolute)
        return DirectoryFacts(key, str(absolute), role, problem=problem,
                              fix=f"make it writable by the agent's user, or set {key} to another directory"
                              if problem else "")
    finally:
        private.close()
    if create:
        creator = PrivateDir(absolute)
        try:
            creator.fd()
        except OSError as exc:
            return DirectoryFacts(key, str(absolute), role, exists=False, problem=str(exc),
                                  fix=_directory_fix(key, exc))
        finally:
            creator.close()
        return DirectoryFacts(key, str(absolute), role, created=True)
    problem = _creatable(absolute)
    return DirectoryFacts(key, str(absolute), role, exists=False, problem=problem,
                          fix=f"create it (mode 0700, owned by the agent's user), or set {key} to another directory"
                          if problem else "")


def _directory_fix(key: str, exc: OSError) -> str:
    if isinstance(exc, UnsafePath):
        return f"as the message says, or set {key} to a directory only the agent's user can write"
    return f"set {key} to a directory the agent's user can create and write"


def probe_lock(state_directory: str) -> LockFacts:
    """Whether an agent holds ``<state_directory>/edr.lock``, and its PID.

    Creates nothing. When the file exists the probe takes the lock (the way
    the agent does, without waiting) and drops it at once: an agent started
    in those microseconds would find it held and exit 2.
    """
    from edr.instance_lock import LOCK_NAME

    directory = Path(os.path.abspath(state_directory))
    path = directory / LOCK_NAME
    if not os.path.lexists(path):
        return LockFacts(str(path), LOCK_FREE)
    private = PrivateDir(directory, create=False)
    try:
        fd = private.open_read(LOCK_NAME)
    except FileNotFoundError:
        return LockFacts(str(path), LOCK_FREE)
    except OSError as exc:
        return LockFacts(str(path), LOCK_UNKNOWN, problem=str(exc))
    finally:
        private.close()
    try:
        if current().lock_file(fd):
            return LockFacts(str(path), LOCK_FREE)
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip() if hasattr(os, "pread") else ""
        return LockFacts(str(path), LOCK_HELD, holder=int(text) if text.isdigit() else None)
    except OSError as exc:
        return LockFacts(str(path), LOCK_UNKNOWN, problem=f"{path}: {exc.strerror or exc}")
    finally:
        os.close(fd)  # drops the lock if it was taken


# --- rules ---------------------------------------------------------------------------------------------

def probe_rule_path(key: str, path: str, suffixes: tuple[str, ...]) -> RulePathFacts:
    """Whether the agent can read the rule file or directory ``path`` (``key`` names it), and its rule files."""
    fix = f"make it readable by the agent's user, or correct {key}"
    if not os.path.exists(path):
        if os.path.lexists(path):
            return RulePathFacts(key, path, problem="is a dangling symbolic link", fix=fix)
        try:
            os.stat(path)
        except PermissionError:
            return RulePathFacts(key, path, problem=f"cannot be reached by {_who()}: Permission denied "
                                                    f"(a directory above it is not searchable)", fix=fix)
        except OSError:
            pass
        return RulePathFacts(key, path, problem="does not exist", fix=f"create it, or correct {key}")
    if not os.path.isdir(path):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            return RulePathFacts(key, path, problem=f"cannot be read by {_who()}: {exc.strerror or exc}", fix=fix)
        return RulePathFacts(key, path)
    errors: list[OSError] = []
    count = 0
    unreadable: list[str] = []
    for top, _dirs, names in os.walk(path, onerror=errors.append):
        for name in names:
            if not name.lower().endswith(suffixes):
                continue
            full = os.path.join(top, name)
            count += 1
            if not os.access(full, os.R_OK, effective_ids=os.access in os.supports_effective_ids):
                unreadable.append(full)
    if errors:
        first = errors[0]
        where = first.filename or path
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return RulePathFacts(key, path, True, count, f"cannot read {where} as {_who()}: "
                                                     f"{first.strerror or first}{more}", fix)
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        return RulePathFacts(key, path, True, count, f"cannot read {unreadable[0]} as {_who()}{more}", fix)
    return RulePathFacts(key, path, True, count)


def configured_rule_paths(config: Config) -> list[tuple[str, str, tuple[str, ...]]]:
    """(key, path, rule suffixes) of every rule path the enabled engines read (``pack`` left out)."""
    from edr.rule_trust import SIGMA_SUFFIXES, YARA_SUFFIXES

    out: list[tuple[str, str, tuple[str, ...]]] = []
    if config.scanner.sigma_enabled:
        out.extend(("scanner.sigma_rules_path", p, SIGMA_SUFFIXES) for p in config.sigma_paths() if p != PACK)
    if config.scanner.yara_enabled and config.scanner.yara_rules_path:
        out.append(("scanner.yara_rules_path", config.scanner.yara_rules_path, YARA_SUFFIXES))
    if config.ioc.enabled:
        for key in ("hashes_path", "ips_path", "domains_path", "paths_regex_path"):
            value = getattr(config.ioc, key)
            if value:
                out.append((f"ioc.{key}", value, ()))
    if config.simple.enabled and config.simple.rules_path:
        out.append(("simple.rules_path", config.simple.rules_path, ()))
    return out


def probe_pack(config: Config) -> tuple[PackFacts, list[str]]:
    """The active pack and its integrity (every file as its manifest says); and its rule directories."""
    from edr.rulepacks.active import active_paths
    from edr.rulepacks.errors import PackError
    from edr.rulepacks.store import PackStore

    store_dir = config.rules.store_directory
    used = config.scanner.sigma_enabled and PACK in config.sigma_paths()
    if not used:
        return PackFacts(False, store_dir), []
    store = PackStore(store_dir)
    try:
        active = store.active_id()
        installed = len(store.pack_ids())
        if active is None:
            return PackFacts(True, store_dir, installed=installed), []
        paths = active_paths(store)
        manifest = store.verify(active)
    except PackError as exc:
        return PackFacts(True, store_dir, active=exc.pack or None, problem=str(exc), kind=exc.kind), []
    return PackFacts(True, store_dir, active, installed, tuple(paths), manifest.loaded,
                     manifest.signature.status), paths


def probe_trust(config: Config) -> tuple[TrustFacts, Config]:
    """The rule-trust check as ``edr run`` makes it (root only), and the configuration narrowed by it."""
    from edr.rule_trust import check_rules, running_as_root

    if not running_as_root():
        return TrustFacts(checked=False, enforced=False), config
    trust = check_rules(config)
    refusals = tuple(RefusalFacts(r.key, r.path, r.message(trust.enforced), r.whole) for r in trust.refusals)
    return TrustFacts(True, config.agent.permissions == "enforce", refusals), trust.config


def load_rules_readonly(paths: list[str], *, placeholders: dict[str, list[str]] | None, cache_dir: str,
                        ) -> RuleSet:
    """The agent's compiled rule set of ``paths``: from its compiled-rule cache when that is current,
    else compiled here; the cache is never written (the agent writes it at start)."""
    from edr.detect.sigma import cache as rule_cache
    from edr.detect.sigma import codec
    from edr.detect.sigma.logsources import ALL_FED
    from edr.detect.sigma.ruleset import RuleFile, Sources, assemble, compile_sources

    sources = Sources.find(paths)
    config = rule_cache.config_digest(paths, placeholders)
    reuse: dict[tuple[str, str], RuleFile] = {}
    stored = rule_cache.load(cache_dir, rule_cache.file_name(config), rule_cache.engine_digest()) \
        if cache_dir else None
    if stored is not None and stored.config == config:
        try:
            files, correlations, failures = stored.build()
        except codec.CodecError:
            files = []
        else:
            if stored.key == rule_cache.set_key(config, sources):
                ruleset = assemble(sources, files, correlations, failures, ALL_FED)
                ruleset.report.cached = True
                return ruleset
        reuse = {(f.path, f.digest): f for f in files if f.digest}
    ruleset, _stable = compile_sources(sources, placeholders=placeholders, fed=ALL_FED, reuse=reuse)
    return ruleset


def probe_sigma(config: Config) -> SigmaFacts:
    """The Sigma rules of ``config`` (already narrowed by the trust check), compiled as the agent would."""
    import time

    if not config.scanner.sigma_enabled:
        return SigmaFacts(enabled=False)
    paths = [p for p in config.sigma_paths() if p != PACK]
    started = time.perf_counter()
    try:
        ruleset = load_rules_readonly(paths, placeholders=config.sigma.placeholders, cache_dir=config.sigma.cache_dir)
    except Exception as exc:  # a bug in loading is reported, not a traceback that hides every other check
        return SigmaFacts(True, tuple(paths), error=f"{type(exc).__name__}: {exc}")
    report = ruleset.report
    return SigmaFacts(True, tuple(paths), files=report.files, rules=tuple(ruleset.rules),
                      correlations=report.correlations,
                      # a configured path that does not exist is the rule-path check's failure, not a rejection
                      rejections=tuple((r.path, r.reason) for r in report.rejections
                                       if not (r.stage == "read" and r.path in paths)), cached=report.cached,
                      seconds=time.perf_counter() - started)


def etw_settings(config: Config) -> Any:
    """The ``[etw]`` settings the ETW sensor runs with: ``config.etw``.

    Where :class:`~edr.config.Config` has no ``etw`` section yet, the sensor
    reads its own defaults (``edr.sources.etw.settings``), and so does this.
    """
    section = getattr(config, "etw", None)
    if section is not None:
        return section
    from edr.sources.etw.settings import etw_config

    return etw_config(config)


def pe_info_available(config: Config) -> bool:
    """Whether the ETW sensor reads process images' hashes and version resources (pefile, ``etw.pe_wait_ms``)."""
    return importlib.util.find_spec("pefile") is not None and etw_settings(config).pe_wait_ms > 0


# --- service -------------------------------------------------------------------------------------------

def probe_service(loaded: LoadedConfig, platform: str) -> ServiceFacts:
    """What the service manager says of edr's service (never starts or changes anything)."""
    if platform == "windows":
        return ServiceFacts(unavailable="`edr service` does not manage a Windows service yet (issue #16)")
    from edr.service.manager import DEFAULT_CONFIG, DEFAULT_EXECUTABLE, ServiceError, default_executable
    from edr.service.systemd_manager import BOOTED_MARKER, systemd_booted

    if not systemd_booted():
        return ServiceFacts(unavailable=f"no systemd here ({BOOTED_MARKER} is missing): "
                                        "no service to look at; the agent runs when started by hand")
    from edr.service.manager import service_manager

    try:
        executable = default_executable()
    except ServiceError:
        executable = DEFAULT_EXECUTABLE  # only compared with the installed unit
    try:
        manager = service_manager(loaded.config, config_path=loaded.file or DEFAULT_CONFIG, executable=executable)
        return ServiceFacts(status=manager.status())
    except ServiceError as exc:
        return ServiceFacts(problem=str(exc))


def _connect(family: int, kind: int, address: Any, timeout: float) -> str:
    """"" when a connection to ``address`` succeeds within ``timeout``, else why not."""
    import socket

    try:
        with socket.socket(family, kind) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__
    return ""


def probe_sinks(config: Config, timeout: float = 3.0) -> list[SinkFacts]:
    """Each ``[syslog]`` target and ``[webhook]`` URL, connected to (TCP, or the local socket) and closed at once.

    Nothing is sent. A TLS target is reached, not handshaken (its certificates are the sink's own check at
    run time); a UDP target has nothing to connect to and is reported as such.
    """
    import socket

    from edr.sink_targets import parse_syslog_target, parse_webhook_url

    found: list[SinkFacts] = []
    for text in config.syslog.targets:
        target = parse_syslog_target(text)
        if target.transport == "udp":
            found.append(SinkFacts("syslog", text, None, "UDP: nothing to connect to, delivery is not acknowledged"))
            continue
        if target.transport == "unix":
            why = _connect(socket.AF_UNIX, socket.SOCK_DGRAM, target.path, timeout)
        else:
            why = _connect(socket.AF_INET6 if ":" in target.host else socket.AF_INET, socket.SOCK_STREAM,
                           (target.host, target.port), timeout)
        found.append(SinkFacts("syslog", text, not why, why))
    for url in config.webhook.urls:
        hook = parse_webhook_url(url)
        why = _connect(socket.AF_INET6 if ":" in hook.host else socket.AF_INET, socket.SOCK_STREAM,
                       (hook.host, hook.port), timeout)
        found.append(SinkFacts("webhook", hook.display, not why, why))
    return found


@attrs.frozen
class Probes:
    """Every probe the doctor runs; replace any of them (``attrs.evolve``) to test the rest."""

    linux_host: Callable[[], LinuxHost] = probe_linux_host
    compiled_sensor: Callable[[Config], Finding] = probe_compiled_sensor
    windows_host: Callable[[], WindowsHost] = probe_windows_host
    directory: Callable[..., DirectoryFacts] = probe_directory
    lock: Callable[[str], LockFacts] = probe_lock
    rule_path: Callable[[str, str, tuple[str, ...]], RulePathFacts] = probe_rule_path
    pack: Callable[[Config], tuple[PackFacts, list[str]]] = probe_pack
    trust: Callable[[Config], tuple[TrustFacts, Config]] = probe_trust
    sigma: Callable[[Config], SigmaFacts] = probe_sigma
    pe_info: Callable[[Config], bool] = pe_info_available
    service: Callable[[LoadedConfig, str], ServiceFacts] = probe_service
    sinks: Callable[[Config], list[SinkFacts]] = probe_sinks
