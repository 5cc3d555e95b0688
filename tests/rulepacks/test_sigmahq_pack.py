"""SigmaHQ's rules as a pack: a zip built from ../shared/sigma installed, loaded, refused when broken, rolled back."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from edr.platform.private_files import check_trusted_tree
from edr.rulepacks import PackError, PackStore, active_paths, install, list_packs, rollback
from tests.conftest import shared_path
from tests.rulepacks.packs import BROKEN_RULE, load, make_zip, pack_entries, settings, sigmahq_like, truncated

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def _zip_checkout(checkout: Path, out: Path) -> Path:
    """The checkout zipped as SigmaHQ's release script does (``zip.write`` of each file, relative names)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for top, _dirs, files in os.walk(checkout):
            for name in sorted(files):
                full = Path(top) / name
                zf.write(full, full.relative_to(checkout).as_posix())
    return out


def test_sigmahq_zip_installs_loads_refuses_broken_packs_and_rolls_back(tmp_path: Path) -> None:
    checkout = shared_path("sigma")
    cfg = settings(tmp_path)
    store = PackStore(cfg.store_directory)
    archive = _zip_checkout(checkout, tmp_path / "sigma_all_rules.zip")

    result = install(archive, store, cfg)
    assert result.changed and result.source_kind == "zip"
    paths = active_paths(store)
    assert [Path(p).name for p in paths] == ["rules", "rules-emerging-threats", "rules-threat-hunting"]
    installed = load(paths)
    direct = load([str(checkout)])
    # the same rules load from the pack as from the checkout; the checkout's one rejected file is
    # logsource-mapping-thor.yml at its root, a mapping table that is not a rule and not part of the pack
    assert (installed.loaded, installed.inert) == (direct.loaded, direct.inert)
    assert installed.loaded > 2500 and installed.inert > 500
    assert [r.path for r in direct.rejections] == [str(checkout / "logsource-mapping-thor.yml")]
    assert installed.rejected == 0 and installed.files == direct.files - 1
    assert (result.loaded, result.inert, result.rejected, result.rule_files) == (
        installed.loaded, installed.inert, 0, installed.files)

    # the checkout itself is the same pack
    same = install(checkout, store, cfg)
    assert not same.changed and same.pack_id == result.pack_id

    # broken packs are refused and the SigmaHQ pack stays active
    with pytest.raises(PackError) as info:
        install(truncated(archive, tmp_path / "cut.zip", keep=0.5), store, cfg)
    assert info.value.kind == "archive"
    with pytest.raises(PackError) as info:
        install(make_zip(tmp_path / "none.zip", {"rules/windows/a.yml": BROKEN_RULE}), store, cfg)
    assert info.value.kind == "empty"
    assert store.active_id() == result.pack_id
    assert pack_entries(tmp_path / "store") == [result.pack_id]

    # a small pack replaces it; rollback brings SigmaHQ's back, intact
    small = install(make_zip(tmp_path / "small.zip", sigmahq_like(2)), store, cfg)
    assert small.previous == result.pack_id
    back = rollback(store, cfg)
    assert back.active.id == result.pack_id and active_paths(store) == paths
    assert [p.active for p in list_packs(store).packs] == [True, False]

    root = tmp_path / "store"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    check_trusted_tree(root)
    for path in paths:
        check_trusted_tree(path)
