"""Hot reload, the part without I/O scheduling: what a reload reads, compiles, keeps or refuses.

A reload (SIGHUP, ``edr reload``, systemd's ``ExecReload``) reads the
configuration again from the same file, environment and command line, and
recompiles every rule engine from it: Sigma, IOC, simple rules and YARA.
:meth:`Reloader.compile` does all of that and blocks for as long as the
compile takes (seconds for a cold Sigma set), so the agent calls it in a
worker thread; :meth:`Reloader.apply` then decides, on the event loop,
whether the candidate replaces the running rule set.

Refused, with the reasons logged and the running set left in place:

- a configuration that does not load (an invalid key or value, an
  untrusted file), or a compile that raises;
- a candidate whose load found rule errors the running set did not have
  (a broken rule, an IOC line that does not parse, a YARA file that does not
  compile, a rule file that is no longer trustworthy). Errors the running
  set already had are no reason to refuse: they were accepted at start.

Only the keys in :data:`RELOADABLE` take effect on a reload; any other key
whose value changed is logged as "needs restart" and keeps its running
value (the graph, its edges, the sensor, the writers and the scanner's
limits are built once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

from edr.config import Config, ConfigError, LoadedConfig, load_config, unstructure
from edr.detect.engines import Detection, load_detection, load_yara
from edr.detect.reloadable import RuleSet, RuleSetHolder, sigma_digests
from edr.detect.yara_rules import YaraRuleSet

#: The configuration keys a reload applies: what the rule engines are compiled from.
#: ``section.*`` is every key of the section. Everything else needs a restart.
RELOADABLE: Final = frozenset({
    "scanner.sigma_enabled", "scanner.sigma_rules_path", "scanner.sigma_match_mode", "scanner.yara_rules_path",
    "sigma.*",
    "ioc.hashes_path", "ioc.ips_path", "ioc.domains_path", "ioc.paths_regex_path", "ioc.default_severity",
    "simple.*",
    "rules.store_directory",
})


def is_reloadable(key: str) -> bool:
    """Whether ``section.key`` takes effect on a reload (see :data:`RELOADABLE`)."""
    return key in RELOADABLE or f"{key.partition('.')[0]}.*" in RELOADABLE


def _flatten(config: Config) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, body in unstructure(config).items()
            for key, value in body.items()}


def config_changes(running: Config, new: Config) -> tuple[list[str], list[str]]:
    """The keys whose value differs: (those a reload applies, those that need a restart), sorted."""
    old, now = _flatten(running), _flatten(new)
    changed = sorted(k for k in old.keys() | now.keys() if old.get(k) != now.get(k))
    return [k for k in changed if is_reloadable(k)], [k for k in changed if not is_reloadable(k)]


def merge_reloadable(running: Config, new: Config) -> Config:
    """``running`` with the values of the reloadable keys taken from ``new``."""
    sections: dict[str, Any] = {}
    for key in config_changes(running, new)[0]:
        section, _, name = key.partition(".")
        body = sections.get(section, getattr(running, section))
        sections[section] = attrs.evolve(body, **{name: getattr(getattr(new, section), name)})
    return attrs.evolve(running, **sections) if sections else running


def cli_overrides(loaded: LoadedConfig) -> dict[str, Any]:
    """The ``section.key`` values the command line set, to apply again on a reload."""
    out: dict[str, Any] = {}
    for key, source in loaded.sources.items():
        if source == "command line":
            section, _, name = key.partition(".")
            out[key] = getattr(getattr(loaded.config, section), name)
    return out


@attrs.frozen
class Candidate:
    """What a reload compiled, or why it could not: ``error`` set means nothing else is.

    ``config`` is the running configuration with the reloadable keys of the
    new one; ``restart_keys`` the changed keys that are not applied;
    ``problems`` every rule error of the new load (and refused rule files).
    """

    error: str | None = None
    config: Config | None = None
    detection: Detection | None = None
    yara: YaraRuleSet | None = None
    digests: Mapping[str, str] = attrs.field(factory=dict)
    problems: tuple[str, ...] = ()
    restart_keys: tuple[str, ...] = ()
    seconds: float = 0.0


@attrs.frozen
class Outcome:
    """What :meth:`Reloader.apply` did: ``accepted`` or not, the set in force after it, a refusal's reasons."""

    accepted: bool
    rules: RuleSet
    reasons: tuple[str, ...] = ()


class Reloader:
    """Recompiles the rules of a running agent and swaps them into ``holder`` when they are sound.

    ``loaded`` is the configuration the agent started with (for the file,
    environment and command-line layers to read again), ``config`` the one
    it runs with (rule files it refused already narrowed out), ``problems``
    the rule errors and refusals the running set was accepted with.
    ``prepare`` turns a freshly loaded configuration into (the configuration
    the engines are built from, the YARA files to compile or None for all,
    the messages of rule files refused): the agent passes its rule-pack
    expansion and permission checks, which may raise ConfigError.
    ``environ`` replaces the process environment (tests).
    """

    def __init__(self, loaded: LoadedConfig, config: Config, holder: RuleSetHolder, *,
                 problems: tuple[str, ...] = (),
                 prepare: Callable[[LoadedConfig], tuple[Config, list[str] | None, tuple[str, ...]]] | None = None,
                 environ: Mapping[str, str] | None = None,
                 log: logging.Logger | None = None) -> None:
        self.loaded = loaded
        self.config = config
        self.holder = holder
        self.problems = tuple(problems)
        self.prepare = prepare
        self.environ = environ
        self.log = log if log is not None else logging.getLogger("edr.reload")
        self.attempts = 0
        self.accepted = 0
        self.rejected = 0

    def compile(self) -> Candidate:
        """Read the configuration again and compile every engine from it. Blocking; never raises."""
        started = time.perf_counter()
        try:
            path = str(self.loaded.file) if self.loaded.file is not None else None
            fresh_loaded = load_config(path, environ=self.environ, overrides=cli_overrides(self.loaded))
            if self.prepare is not None:
                fresh, yara_files, refusals = self.prepare(fresh_loaded)
            else:
                fresh, yara_files, refusals = fresh_loaded.config, None, ()
            _, restart = config_changes(self.config, fresh)
            config = merge_reloadable(self.config, fresh)
            detection = load_detection(config)
            digests = sigma_digests(detection)
            yara = load_yara(config, yara_files)
        except ConfigError as exc:
            return Candidate(error=f"configuration: {exc}", seconds=time.perf_counter() - started)
        except Exception as exc:  # a compile that raises is refused, never the agent's end
            self.log.debug("reload: compile failed", exc_info=True)
            return Candidate(error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started)
        problems = tuple(refusals) + detection.problems
        if yara is not None:
            problems += tuple(f"yara: {err}" for err in yara.errors)
        return Candidate(config=config, detection=detection, yara=yara, digests=digests, problems=problems,
                         restart_keys=tuple(restart), seconds=time.perf_counter() - started)

    def apply(self, candidate: Candidate) -> Outcome:
        """Swap ``candidate`` in (publish it in the holder) or refuse it; logs either way. Fast: no I/O."""
        self.attempts += 1
        running = self.holder.current
        if candidate.error is not None:
            return self._refuse(running, (candidate.error,))
        assert candidate.detection is not None and candidate.config is not None
        known = set(self.problems)
        new = tuple(p for p in candidate.problems if p not in known)
        if new:
            return self._refuse(running, new)
        before = running.counts()
        rules = self.holder.replace(candidate.detection, candidate.yara, candidate.digests)
        self.config = candidate.config
        self.problems = candidate.problems
        self.accepted += 1
        after = rules.counts()
        change = ", ".join(f"{k} {before.get(k, 0)} -> {after.get(k, 0)}" for k in dict.fromkeys([*before, *after]))
        self.log.info("reload: rule set #%d in force (was #%d), compiled in %.2fs: %s", rules.version,
                      running.version, candidate.seconds, change or "no engines")
        if candidate.restart_keys:
            self.log.warning("reload: changed but not applied until a restart (needs restart): %s",
                             ", ".join(candidate.restart_keys))
        return Outcome(True, rules)

    def _refuse(self, running: RuleSet, reasons: tuple[str, ...]) -> Outcome:
        self.rejected += 1
        for reason in reasons:
            self.log.error("reload refused: %s", reason)
        self.log.error("reload refused (%d reason%s above): rule set #%d stays in force", len(reasons),
                       "" if len(reasons) == 1 else "s", running.version)
        return Outcome(False, running, reasons)

    def statistics(self) -> dict[str, int]:
        """Reloads attempted, accepted and refused, and the version in force."""
        return {"attempts": self.attempts, "accepted": self.accepted, "rejected": self.rejected,
                "version": self.holder.version}
