"""What the agent loads of the installed rule packs: the active pack's rule directories.

Kept apart from the install machinery (archives, downloads, signatures) so
that ``edr run`` and ``edr replay`` import only this to find their rules.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from edr.config import PACK, Config
from edr.rulepacks.errors import PackError
from edr.rulepacks.layout import normalize_name

if TYPE_CHECKING:
    from edr.rulepacks.store import PackStore

log = logging.getLogger("edr.rules")

#: What the agent should log when no pack is installed.
NO_PACK_HINT: Final = ("no Sigma rule pack is installed, so only the bundled rules load: 'edr rules update' "
                       "downloads SigmaHQ's rules, 'edr rules install sigma_all_rules.zip' installs them offline")


def active_paths(store: PackStore | str | os.PathLike[str]) -> list[str]:
    """The active pack's rule directories (absolute, resolved): what ``edr run`` loads besides its bundled rules.

    ``[]`` when no pack is installed (the caller logs :data:`NO_PACK_HINT`).
    The paths name the pack's own directory, not the ``active`` link, so a
    load that runs while another pack is activated reads one pack only.
    Creates nothing. Raises PackError (``store``) when the active pack is
    broken (the caller logs it and goes on with its bundled rules).
    """
    # imported here: a start whose rule paths name no pack (edr replay --sigma DIR) needs none of the
    # store (its manifests, msgspec's schemas: ~8 ms)
    from edr.rulepacks.store import CONTENT_DIR, PackStore

    store = store if isinstance(store, PackStore) else PackStore(store)
    pack_id = store.active_id()
    if pack_id is None:
        return []
    manifest = store.manifest(pack_id)
    content = Path(os.path.realpath(store.pack_dir(pack_id))) / CONTENT_DIR
    for directory in manifest.rule_dirs:
        if directory == "":
            continue  # the pack's root is its rule directory
        try:
            clean = normalize_name(directory)
        except PackError:
            clean = None
        if clean != directory:
            raise PackError("store", f"manifest names rule directory {directory!r}, which is not inside the pack",
                            pack=pack_id, member="pack.json")
    paths = [str(content / d) if d else str(content) for d in manifest.rule_dirs]
    for path in paths:
        if not os.path.isdir(path):
            raise PackError("store", f"rule directory {path} is missing", pack=pack_id)
    return paths


def expand_pack(config: Config) -> Config:
    """``config`` with ``pack`` in ``scanner.sigma_rules_path`` replaced by the active pack's rule directories.

    For the commands that load rules (run, replay, rules check). No pack
    installed: the word is dropped and :data:`NO_PACK_HINT` logged once; a
    broken active pack is logged as an error and dropped too, so edr runs on
    the rest (its bundled rules at least).
    """
    paths = config.sigma_paths()
    if PACK not in paths:
        return config
    try:
        active = active_paths(config.rules.store_directory)
    except PackError as exc:
        log.error("rules: the active rule pack cannot be used: %s; running without it", exc)
        active = []
    if not active:
        log.warning("rules: %s", NO_PACK_HINT)
    expanded: list[str] = []
    for path in paths:
        expanded.extend(active if path == PACK else [path])
    return attrs.evolve(config, scanner=attrs.evolve(config.scanner, sigma_rules_path=expanded))
