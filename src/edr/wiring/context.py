"""What actors are built from: the configuration, the mode, run options and :class:`Shared`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import attrs

from edr.config import Config
from edr.detect.engines import Detection, load_detection, load_yara
from edr.detect.reloadable import RuleSet, RuleSetHolder, sigma_digests
from edr.enrich.process_cache import ProcessCache

if TYPE_CHECKING:
    from edr.alerts.daily_file import DailyFile
    from edr.detect.yara_rules import YaraRuleSet
    from edr.platform.kill import KillResult
    from edr.response.decision import ResponseTarget


class Shared:
    """What several actors are built around, made once per run and on first use.

    - :attr:`detection`: the Sigma, IOC and simple engines (the detection
      actor matches with them, the router asks which fields they read, the
      scanner asks the IOC engine about hashes);
    - :attr:`yara`: the compiled YARA rules (None when YARA is off);
    - :attr:`processes`: the process cache, bounded per ``[process]``; the
      enricher actor is the only one that changes it;
    - :attr:`rules`: :attr:`detection` and :attr:`yara` as version 1 of a
      :class:`~edr.detect.reloadable.RuleSetHolder`, which a hot reload
      replaces; the detection and scan actors read it between batches (after
      a reload :attr:`detection` and :attr:`yara` are the rules of the start).

    ``yara_files`` restricts YARA to the rule files the permission check
    trusted (None: the configured path as it is). ``edr replay``, the
    benchmarks and the fuzzer build one and reuse it across runs.
    """

    def __init__(self, config: Config, *, yara_files: Sequence[str] | None = None) -> None:
        self.config = config
        self.yara_files = None if yara_files is None else tuple(yara_files)

    @cached_property
    def detection(self) -> Detection:
        """The detection engines (loading them may take seconds: rule compilation)."""
        return load_detection(self.config)

    @cached_property
    def yara(self) -> YaraRuleSet | None:
        """The compiled YARA rules, None when YARA is off."""
        return load_yara(self.config, self.yara_files)

    @cached_property
    def rules(self) -> RuleSetHolder:
        """The rules in force, replaced by hot reloads (loading them may take seconds)."""
        detection = self.detection
        return RuleSetHolder(RuleSet(1, detection, self.yara, sigma_digests(detection)))

    @cached_property
    def processes(self) -> ProcessCache:
        """The process cache (empty until the enricher seeds and fills it)."""
        limits = self.config.process
        return ProcessCache(max_entries=limits.max_entries, max_bytes=limits.max_bytes)


@attrs.define
class RunOptions:
    """Per-run choices that are not configuration.

    ``files``: what ``edr replay`` reads; ``stdout``: write alerts on
    standard output; ``alerts_to_file``: write them to the daily alert
    files of ``[alerts]`` (a replay without ``--output`` does not);
    ``dedup``: fold identical alerts in a replay too (live agents always
    do, per ``alerts.dedup_enabled``). The
    rest replace a real dependency (tests, benchmarks): ``alert_file``
    where alerts go, ``terminator`` what kills a process, ``windows_host``
    the Windows host facts the ETW normalizer asks. ``workers``: how many
    processes read the files of a replay (``edr replay --workers``).
    """

    files: list[str] = attrs.field(factory=list)
    stdout: bool = False
    alerts_to_file: bool = True
    dedup: bool = False
    alert_file: DailyFile | None = None
    terminator: Callable[[ResponseTarget], KillResult] | None = None
    windows_host: Any = None
    workers: int = 1


@attrs.define
class AgentContext:
    """Everything an actor of a graph is built from."""

    config: Config
    mode: str
    shared: Shared
    options: RunOptions = attrs.field(factory=RunOptions)
    log: logging.Logger = attrs.field(factory=lambda: logging.getLogger("edr"))

    @classmethod
    def create(cls, config: Config, mode: str, *, shared: Shared | None = None,
               log: logging.Logger | None = None, **options: Any) -> AgentContext:
        """A context with a new :class:`Shared` (unless given) and ``options`` as :class:`RunOptions`."""
        return cls(config=config, mode=mode, shared=shared if shared is not None else Shared(config),
                   options=RunOptions(**options), log=log if log is not None else logging.getLogger("edr"))
