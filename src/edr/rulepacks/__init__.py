"""Sigma rule packs: install, update, list, roll back, and what the agent loads (issue #14, point 2).

A *pack* is a set of Sigma rules from one source: SigmaHQ's release
package (``sigma_all_rules.zip``), a SigmaHQ checkout, any directory, zip
or tar archive of rules. Packs are installed into a store
(``rules.store_directory``, ``/var/lib/edr/rules`` when installed), each in
its own versioned directory, and one of them is *active*: its rule
directories are what ``edr run`` loads besides the bundled ``rules/``.

Public API (blocking; every failure is a :class:`PackError` naming the
pack, the file and the reason; results have ``to_text()`` and ``to_json()``)::

    from edr.config import RulesConfig
    from edr.rulepacks import PackStore, install, update, list_packs, rollback, active_paths
    from edr.rulepacks import terminal_progress, NO_PACK_HINT

    settings = RulesConfig(store_directory="/var/lib/edr/rules")
    store = PackStore(settings.store_directory)
    result = install("sigma_all_rules.zip", store, settings, terminal_progress(),
                     placeholders=config.sigma.placeholders)          # InstallResult
    result = update(store, settings, terminal_progress())              # InstallResult (downloads update_url)
    listing = list_packs(store)                                        # ListResult
    back = rollback(store, settings)                                   # RollbackResult (or to="<pack id>")
    paths = active_paths(store)                                        # [] when no pack: log NO_PACK_HINT

Modules: ``settings`` (``[rules]`` and the limits), ``layout`` (names,
hostile entries, which files are rules; sans-IO), ``archive`` (reading
directories, zips and tars), ``integrity`` (SHA256SUMS, minisign, digest;
sans-IO), ``manifest`` (``pack.json``), ``store`` (pack directories and the
atomic ``active`` switch), ``download`` (HTTPS), ``progress`` (:mod:`edr.progress`: tqdm on a
terminal), ``commands`` (the steps of an install), ``results``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Public name -> the module that defines it, imported on first use (PEP 562): the agent
#: needs only ``active``, not the archive, download and signature machinery.
_EXPORTS = {
    "NO_PACK_HINT": "active", "active_paths": "active", "expand_pack": "active",
    "install": "commands", "list_packs": "commands", "rollback": "commands", "update": "commands",
    "PackError": "errors", "SignatureInfo": "integrity", "NullProgress": "progress", "Progress": "progress",
    "terminal_progress": "progress", "InstallResult": "results", "ListResult": "results", "PackInfo": "results",
    "RollbackResult": "results", "Limits": "settings", "PackStore": "store",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edr.rulepacks' has no attribute {name!r}")
    # the progress bars live in edr.progress (the Sigma compiler shows them too)
    return getattr(import_module("edr.progress" if module == "progress" else f"edr.rulepacks.{module}"), name)


__all__ = [
    "NO_PACK_HINT",
    "InstallResult",
    "Limits",
    "ListResult",
    "NullProgress",
    "PackError",
    "PackInfo",
    "PackStore",
    "Progress",
    "RollbackResult",
    "SignatureInfo",
    "active_paths",
    "expand_pack",
    "install",
    "list_packs",
    "rollback",
    "terminal_progress",
    "update",
]
