"""Test helpers: real executables carrying the YARA test marker, and a rules directory."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARKER = "_".join(["EDR", "TEST", "MARKER", "7f3a9c2e", "DO", "NOT", "PANIC"]).encode()
RULE = "EDR_Test_Marker"


def marked_binary(directory: Path, name: str = "evil", *, marker: bool = True, pad: int = 0) -> Path:
    """A copy of ``sleep`` (a real ELF that runs) with the marker appended, optionally padded."""
    directory.mkdir(parents=True, exist_ok=True)
    src = Path(shutil.which("sleep") or "/bin/sleep")
    path = directory / name
    with open(path, "wb") as fh:
        fh.write(src.read_bytes())
        if pad:
            fh.write(b"\0" * pad)
        if marker:
            fh.write(b"\n" + MARKER + b"\n")
    path.chmod(0o755)
    return path


def rules_dir(directory: Path) -> Path:
    """A rules directory: the shipped marker rule, a second good file and a corrupt one."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "rules/yara/edr_test_marker.yar", directory / "edr_test_marker.yar")
    (directory / "other.yara").write_text(
        'rule Other_Rule : other { strings: $s = "SOMETHING_ELSE_ENTIRELY_42" condition: $s }\n')
    (directory / "broken.yar").write_text(
        'rule Broken {\n  strings:\n    $a = "x"\n  condition:\n    $a and\n}\n')
    return directory
