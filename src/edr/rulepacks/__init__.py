"""Sigma rule packs: install, update, list, roll back, and what the agent loads (issue #14, point 2).

A *pack* is a set of Sigma rules from one source: SigmaHQ's release
package (``sigma_all_rules.zip``), a SigmaHQ checkout, any directory, zip
or tar archive of rules. Packs are installed into a store
(``rules.store_directory``, ``/var/lib/edr/rules`` when installed), each in
its own versioned directory, and one of them is *active*: its rule
directories are what ``edr run`` loads besides the bundled ``rules/``.

Public API (blocking; every failure is a :class:`PackError` naming the
pack, the file and the reason; results have ``to_text()`` and ``to_json()``)::

    from edr.rulepacks import RulesConfig, PackStore, install, update, list_packs, rollback, active_paths
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
atomic ``active`` switch), ``download`` (HTTPS), ``progress`` (tqdm on a
terminal), ``commands`` (the steps of an install), ``results``.
"""

from __future__ import annotations

from edr.rulepacks.commands import NO_PACK_HINT, active_paths, install, list_packs, rollback, update
from edr.rulepacks.errors import PackError
from edr.rulepacks.integrity import SignatureInfo
from edr.rulepacks.progress import NullProgress, Progress, terminal_progress
from edr.rulepacks.results import InstallResult, ListResult, PackInfo, RollbackResult
from edr.rulepacks.settings import DEFAULT_STORE, DEFAULT_UPDATE_URL, Limits, RulesConfig
from edr.rulepacks.store import PackStore

__all__ = [
    "DEFAULT_STORE",
    "DEFAULT_UPDATE_URL",
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
    "RulesConfig",
    "SignatureInfo",
    "active_paths",
    "install",
    "list_packs",
    "rollback",
    "terminal_progress",
    "update",
]
