"""What a pack holds and which of it is installed: names checked, layout found (sans-IO).

Every source (a directory, a zip, a tar) is first listed as :class:`Entry`
records, and :func:`plan_pack` decides from that list alone, before a byte
is read or written:

- **Safety.** Each name must stay inside the pack: no absolute path, drive
  letter, ``..`` component, backslash, NUL or line break; no two entries
  with the same name; no file that is also a directory of another entry.
  Only regular files and directories are accepted: a symbolic or hard link,
  a device, a FIFO, an encrypted or sparse member refuses the whole pack.
- **Limits.** The entries, their declared sizes and any one file are
  checked against :class:`~edr.rulepacks.settings.Limits` (the sizes are
  checked again as the bytes are read: an archive may lie).
- **Layout.** A single top-level directory that is not itself a rule
  directory is stripped (GitHub's source archives wrap a checkout in
  ``sigma-<ref>/``). Then, if the root holds directories named ``rules`` or
  ``rules-*`` (SigmaHQ's checkout and its release packages such as
  ``sigma_all_rules.zip``: ``rules/``, ``rules-emerging-threats/``,
  ``rules-threat-hunting/``...), those are the rule directories and nothing
  else of the root is installed (a checkout's ``deprecated/``,
  ``unsupported/``, ``tests/`` and its mapping files are not rules);
  otherwise the whole root is the one rule directory. Rule files are the
  ``.yml``/``.yaml`` files beneath the rule directories; a licence file at
  the root (``LICENSE*``, ``LICENCE*``, ``COPYING*``) goes with them.
- **Hidden entries** (a component starting with ``.``: ``.git``,
  ``.github``) are checked for safety and counted, never read or installed.

Every other visible regular file is read too, so that ``SHA256SUMS`` can be
checked against all it lists (see :mod:`edr.rulepacks.integrity`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import attrs

from edr.rulepacks.errors import PackError
from edr.rulepacks.settings import Limits

#: The suffixes edr's Sigma loader reads (edr.detect.sigma.loader.RULE_SUFFIXES).
RULE_SUFFIXES: Final = (".yml", ".yaml")
#: The checksum list at the root of a pack, and its minisign signature.
SUMS_NAME: Final = "SHA256SUMS"
SIGNATURE_NAME: Final = "SHA256SUMS.minisig"
LICENCE_PREFIXES: Final = ("license", "licence", "copying")
#: Longest name and deepest nesting accepted (SigmaHQ's deepest rule is 6 levels down).
MAX_NAME_CHARS: Final = 1024
MAX_DEPTH: Final = 32

#: The kinds of :class:`Entry` a reader reports; only "file" and "dir" are accepted.
KIND_WORDS: Final[dict[str, str]] = {
    "symlink": "is a symbolic link",
    "hardlink": "is a hard link",
    "device": "is a device",
    "fifo": "is a FIFO",
    "socket": "is a socket",
    "other": "is not a regular file or a directory",
}

_DRIVE = re.compile(r"^[A-Za-z]:")


@attrs.frozen
class Entry:
    """One member of a source as its reader lists it.

    ``name`` is the member's name as stored (``/``-separated), ``kind``
    "file", "dir" or one of :data:`KIND_WORDS`, ``size`` the declared size
    of a file and ``problem`` a refusal the reader found itself (an
    encrypted zip member, a sparse tar member), or None.
    """

    name: str
    kind: str
    size: int = 0
    problem: str | None = None


@attrs.frozen
class PackPlan:
    """What to read from a source and what of it to install.

    ``read`` maps each member name to read to its name in the pack (the
    stripped top-level directory removed); ``install`` is the subset of pack
    names written under the pack's ``content/``; ``rule_dirs`` are the
    rule directories relative to ``content/`` (``""`` is ``content/``
    itself); ``sums`` and ``signature`` are the pack names of
    ``SHA256SUMS`` and its signature when the pack has them.
    """

    prefix: str
    rule_dirs: tuple[str, ...]
    read: dict[str, str]
    install: frozenset[str]
    rule_files: int
    sums: str | None
    signature: str | None
    entries: int
    ignored: int


def normalize_name(raw: str) -> str:
    """``raw`` as a clean relative ``a/b/c`` name; raises :class:`PackError` (``unsafe``) naming the problem.

    ``.`` components, empty components (``a//b``) and a trailing ``/`` are
    dropped; anything that could name a place outside the pack is refused.
    """
    if not raw:
        raise PackError("unsafe", "has an empty name", member=repr(raw))
    for char, what in (("\x00", "a NUL byte"), ("\n", "a line break"), ("\r", "a line break"),
                       ("\\", "a backslash (a Windows path separator)")):
        if char in raw:
            raise PackError("unsafe", f"name contains {what}", member=repr(raw))
    if raw.startswith("/"):
        raise PackError("unsafe", "is an absolute path", member=raw)
    if _DRIVE.match(raw):
        raise PackError("unsafe", "starts with a drive letter", member=raw)
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PackError("unsafe", "has a '..' component (it would be written outside the pack)", member=raw)
    if not parts:
        return ""
    if len(raw) > MAX_NAME_CHARS or len(parts) > MAX_DEPTH:
        raise PackError("unsafe", f"name is longer than {MAX_NAME_CHARS} characters or deeper than "
                                  f"{MAX_DEPTH} directories", member=raw[:80] + "...")
    return "/".join(parts)


def is_hidden(name: str) -> bool:
    """Whether any component of the normalized ``name`` starts with a dot (``.git/...``)."""
    return any(part.startswith(".") for part in name.split("/"))


def is_rule_dir_name(name: str) -> bool:
    """``rules`` or ``rules-*``: SigmaHQ's rule directories."""
    return name == "rules" or name.startswith("rules-")


def is_rule_file(name: str) -> bool:
    """A name the Sigma loader reads."""
    return name.lower().endswith(RULE_SUFFIXES)


def _is_licence(name: str) -> bool:
    return "/" not in name and name.lower().startswith(LICENCE_PREFIXES)


def _check_entries(entries: list[Entry], limits: Limits) -> dict[str, Entry]:
    """Normalized name -> entry, refusing unsafe, conflicting and oversized entries."""
    if len(entries) > limits.max_files:
        raise PackError("limit", f"has {len(entries):,} entries, more than rules.max_files "
                                 f"({limits.max_files:,})")
    by_name: dict[str, Entry] = {}
    declared = 0
    for entry in entries:
        name = normalize_name(entry.name)
        if entry.problem:
            raise PackError("archive", entry.problem, member=entry.name)
        if entry.kind not in ("file", "dir"):
            word = KIND_WORDS.get(entry.kind, KIND_WORDS["other"])
            raise PackError("unsafe", f"{word}: a rule pack may hold only regular files and directories",
                            member=entry.name)
        if not name:
            if entry.kind == "file":
                raise PackError("unsafe", "is a file with no name", member=entry.name)
            continue  # "./": the root itself
        previous = by_name.get(name)
        if previous is not None:
            if previous.kind == "dir" and entry.kind == "dir":
                continue  # a tar may list a directory twice; harmless
            raise PackError("unsafe", "appears twice in the pack", member=entry.name)
        if entry.kind == "file":
            if entry.size > limits.max_file_bytes:
                raise PackError("limit", f"is {entry.size:,} bytes, more than the {limits.max_file_bytes:,} "
                                         f"one file of a pack may hold", member=entry.name)
            declared += entry.size
            if declared > limits.max_unpacked_bytes:
                raise PackError("limit", f"unpacks to more than rules.max_unpacked_bytes "
                                         f"({limits.max_unpacked_bytes:,} bytes)")
        by_name[name] = entry
    for name, entry in by_name.items():
        # a file that is also the directory of another entry: which would the writer create?
        parent = name.rpartition("/")[0]
        while parent:
            holder = by_name.get(parent)
            if holder is not None and holder.kind == "file":
                raise PackError("unsafe", f"is inside {parent!r}, which is a file", member=entry.name)
            parent = parent.rpartition("/")[0]
    return by_name


def _strip_prefix(files: Iterable[str], dirs: Iterable[str]) -> str:
    """The single top-level directory wrapping everything visible (not a rule directory), or ""."""
    tops: set[str] = set()
    root_file = False
    for name in files:
        top, sep, _ = name.partition("/")
        tops.add(top)
        root_file = root_file or not sep
    for name in dirs:
        tops.add(name.partition("/")[0])
    if len(tops) != 1 or root_file:
        return ""
    (top,) = tops
    return "" if is_rule_dir_name(top) else top + "/"


def plan_pack(entries: list[Entry], limits: Limits) -> PackPlan:
    """Check ``entries`` and decide what to read and install; raises :class:`PackError` (see module doc)."""
    by_name = _check_entries(entries, limits)
    visible_files = [n for n, e in by_name.items() if e.kind == "file" and not is_hidden(n)]
    visible_dirs = [n for n, e in by_name.items() if e.kind == "dir" and not is_hidden(n)]
    ignored = len(by_name) - len(visible_files) - len(visible_dirs)
    prefix = _strip_prefix(visible_files, visible_dirs)

    read: dict[str, str] = {}
    for name in visible_files:
        # entries' own names (not normalized) are what the reader knows them by
        read[by_name[name].name] = name[len(prefix):]
    pack_names = set(read.values())
    top_dirs = {n.partition("/")[0] for n in pack_names if "/" in n}
    top_dirs.update(d[len(prefix):].partition("/")[0] for d in visible_dirs if d.startswith(prefix)
                    and d[len(prefix):])
    rule_dirs = tuple(sorted(d for d in top_dirs if is_rule_dir_name(d))) or ("",)

    install: set[str] = set()
    rule_files = 0
    for name in pack_names:
        inside = rule_dirs == ("",) or ("/" in name and name.partition("/")[0] in rule_dirs)
        if inside and is_rule_file(name):
            install.add(name)
            rule_files += 1
        elif _is_licence(name):
            install.add(name)
    if not rule_files:
        where = ", ".join(f"{d}/" for d in rule_dirs) if rule_dirs != ("",) else "the pack"
        raise PackError("empty", f"no Sigma rule file ({' or '.join(RULE_SUFFIXES)}) in {where}")
    if rule_dirs != ("",):  # a rules-* directory with no rule file in it is not one to load
        rule_dirs = tuple(d for d in rule_dirs if any(n.startswith(d + "/") and is_rule_file(n) for n in install))
    return PackPlan(
        prefix=prefix, rule_dirs=rule_dirs, read=read, install=frozenset(install), rule_files=rule_files,
        sums=SUMS_NAME if SUMS_NAME in pack_names else None,
        signature=SIGNATURE_NAME if SIGNATURE_NAME in pack_names else None,
        entries=len(entries), ignored=ignored,
    )
