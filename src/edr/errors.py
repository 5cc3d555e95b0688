"""edr's error base class and locations (defined in :mod:`edr.runtime.errors`, which imports nothing of edr).

Every error about an input carries its place: :class:`~edr.config.ConfigError`
(file and key), :class:`~edr.runtime.graph.GraphError` (graph file and item),
:class:`~edr.detect.simple.RuleError` (rule file and rule),
:class:`~edr.detect.ioc.lists.IocLineError` (list file and line),
:class:`~edr.detect.yara_rules.YaraFileError` (rule file and line) and
:class:`~edr.detect.sigma.errors.SigmaRuleError` (rule file and rule id).
"""

from edr.runtime.errors import EdrError, Location

__all__ = ["EdrError", "Location"]
