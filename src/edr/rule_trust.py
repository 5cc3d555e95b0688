"""What a root agent may load: the configuration file and the rule paths it names, checked once at start.

Configuration and rules decide what a root process does (and, with active
response, what it kills), so when the agent runs as root (euid 0) every
file it loads them from must be changeable by root (or the agent's own
user) only: :func:`edr.platform.private_files.check_trusted` for the file and every
directory above it. The commands that load rules (``edr run``, ``edr
replay``, ``edr rules check``) call this module once, before anything is
loaded; the engines themselves check nothing and are simply not given what
was refused. Not running as root, nothing is checked: the agent then cannot
do more than the user who started it.

Policy, the same for Sigma, YARA, IOC lists and simple rules:

- **The configuration file** must be trusted, or the command exits 2 with
  a message naming the file and the fix (:func:`check_config_file`).
- **A configured rule path** (file or directory) that is not trusted
  itself, or lies under a directory that is not, is refused whole: nothing
  under it is loaded. For an IOC list or the simple-rules file that means
  the list or file is not loaded.
- **Inside a trusted rule directory**, each rule file the engine would read
  (``.yml``/``.yaml`` for Sigma, ``.yar``/``.yara`` for YARA) and each
  directory is checked: an untrusted file is skipped alone, an untrusted
  directory is skipped with everything under it (whoever can write it can
  add rules to it). One loose file in the SigmaHQ tree costs that file only.
  Files the engine does not read (``README.md``) are not checked.
- The agent runs on what is left, and every refusal is logged as an error
  naming the path, what is wrong and the command that fixes it.
- ``agent.permissions = "warn"`` makes the same checks log warnings instead
  and loads everything (test rigs). For the configuration file itself only a
  ``warn`` from the environment or the command line counts: a file that
  others can write cannot vouch for itself.

How refusals reach the engines: :func:`check_rules` returns the
configuration *narrowed* to what is trusted, in the forms every loader
already reads: a refused path is dropped from the Sigma path list, and a
Sigma directory with refused entries is replaced by the list of its
trusted rule files; a refused IOC list or simple-rules file becomes ``""``
(no list, no file). YARA namespaces rule files by their path under the
configured directory, so its trusted files are passed beside the
configuration (:attr:`RuleTrust.yara_files`, given to
:class:`edr.wiring.context.Shared` as ``yara_files``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs

from edr.config import FILE_KEY, Config, ConfigError, LoadedConfig
from edr.platform.private_files import UnsafePath, check_trusted, status_problem

log = logging.getLogger("edr.trust")

SIGMA_SUFFIXES: Final = (".yml", ".yaml")
YARA_SUFFIXES: Final = (".yar", ".yara")
_IOC_KEYS: Final = ("hashes_path", "ips_path", "domains_path", "paths_regex_path")


def running_as_root() -> bool:
    """True when the checks apply: the effective user is root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


@attrs.frozen
class Refusal:
    """A rule path that other users can change.

    ``key`` is the configuration key that names it (or leads to it), ``whole``
    says whether it is the configured path itself (nothing under it loads)
    or one entry inside a configured directory.
    """

    key: str
    path: str
    reason: str
    whole: bool
    is_dir: bool

    def message(self, enforced: bool) -> str:
        """One line for the log: what, why, the fix, and what the agent does about it."""
        what = "rule directory" if self.is_dir else "rule file"
        if enforced:
            outcome = ("not loaded, nor anything under it" if self.is_dir else "not loaded")
        else:
            outcome = 'loaded anyway (agent.permissions = "warn")'
        return f"{what} {self.path} ({self.key}): {self.reason}; {outcome}"


@attrs.frozen
class RuleTrust:
    """The outcome of :func:`check_rules`: what to load, and what was refused."""

    #: The configuration the engines are built from: narrowed to trusted paths when enforced.
    config: Config
    refusals: tuple[Refusal, ...] = ()
    #: Whether refusals take effect ("enforce" as root); False when only warned or not root.
    enforced: bool = False
    #: The YARA rule files to compile (None: everything under ``scanner.yara_rules_path``).
    yara_files: tuple[Path, ...] | None = None

    def log_refusals(self, *, echo: bool = False) -> None:
        """Log every refusal: an error when enforced, else a warning; ``echo`` prints them to stderr too."""
        for refusal in self.refusals:
            text = refusal.message(self.enforced)
            log.log(logging.ERROR if self.enforced else logging.WARNING, "%s", text)
            if echo:
                print(f"edr: {text}", file=sys.stderr)


def _problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be trusted (what is wrong and the fix), or None; None too when it does not exist."""
    if not os.path.exists(path):
        return None  # nothing will be read from it: the loader reports a missing path
    try:
        check_trusted(path)
    except UnsafePath as exc:
        return exc.reason
    except OSError as exc:  # a status that cannot even be read is no better
        return f"cannot be checked ({exc.strerror or exc})"
    return None


def check_config_file(loaded: LoadedConfig) -> str | None:
    """As root, refuse (ConfigError, exit 2) a configuration file that other users can change.

    With ``agent.permissions = "warn"`` from the environment or the command
    line, return the warning to log instead (the caller logs it once logging
    is set up: nothing of the file is acted on before this check). None when
    there is nothing to say: no file, not root, or a trusted file.
    """
    if loaded.file is None or not running_as_root():
        return None
    problem = _problem(loaded.file)
    if problem is not None:
        source = loaded.sources.get("agent.permissions", "default")
        warn_only = loaded.config.agent.permissions == "warn" and source != str(loaded.file)
        if warn_only:
            return (f"configuration file {loaded.file}: {problem}; loaded anyway "
                    f'(agent.permissions = "warn" from {source})')
        hint = ("; agent.permissions in the file itself does not count for the file"
                if loaded.config.agent.permissions == "warn" else "")
        raise ConfigError(
            FILE_KEY, str(loaded.file),
            f"{problem}; refusing to run as root on a configuration other users can change "
            f"(for a test rig only: EDR__AGENT__PERMISSIONS=warn or --permissions warn{hint})",
        ) from None
    return None


def _trusted_files(key: str, root: str, suffixes: tuple[str, ...],
                   refusals: list[Refusal]) -> list[Path] | None:
    """The rule files under ``root`` that may be loaded, or None when all of them may.

    Appends a :class:`Refusal` for ``root`` itself (then returns ``[]``) or
    for each untrusted rule file and directory under it. A root that does
    not exist is left to the loader, which reports it.
    """
    problem = _problem(root)
    if problem is not None:
        refusals.append(Refusal(key, root, problem, whole=True, is_dir=os.path.isdir(root)))
        return []
    if not os.path.isdir(root):
        return None
    files: list[str] = []
    before = len(refusals)
    _walk(key, root, os.path.realpath(root), suffixes, refusals, files)
    if len(refusals) == before:
        return None  # the usual case: no Path made for each of thousands of files
    # the order the loaders' own sorted(rglob) gives, so nothing but the refused entries changes
    return sorted(map(Path, files))


def _walk(key: str, directory: str, real: str, suffixes: tuple[str, ...], refusals: list[Refusal],
          files: list[str]) -> None:
    """Check the rule files and directories under ``directory`` (trusted, and every directory above it).

    ``real`` is ``directory`` with its links resolved: what the messages name
    in the fix, as :func:`check_trusted` does. One ``scandir`` per directory
    and one ``lstat`` per rule file or directory: what is reached without
    following a link sits in a directory already found trusted, so only
    the entry itself is left to check. A link is checked in full (its target
    and every directory above it, as :func:`check_trusted` does), so a link out
    of the tree is trusted only as far as what it points at is; like the
    loaders' ``rglob``, a linked directory is not descended into.
    """
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda entry: entry.name)
    except OSError:
        return  # removed meanwhile or unreadable: os.walk skipped it too, the loader reports what it cannot read
    subdirs: list[tuple[str, str]] = []
    # directories first, then files: the order of the refusals os.walk gave
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # a link to a directory too: checked, not descended
        except OSError:
            continue
        if not is_dir:
            continue
        problem = _entry_problem(entry, os.path.join(real, entry.name))
        if problem is not None:
            refusals.append(Refusal(key, entry.path, problem, whole=False, is_dir=True))
        elif not entry.is_symlink():
            subdirs.append((entry.path, os.path.join(real, entry.name)))
    for entry in entries:
        if not entry.name.lower().endswith(suffixes):
            continue
        try:
            if not entry.is_file():
                continue  # a dangling link or a directory: the loaders skip it too
        except OSError:
            continue
        problem = _entry_problem(entry, os.path.join(real, entry.name))
        if problem is not None:
            refusals.append(Refusal(key, entry.path, problem, whole=False, is_dir=False))
            continue
        files.append(entry.path)
    for path, real_path in subdirs:
        _walk(key, path, real_path, suffixes, refusals, files)


def _entry_problem(entry: os.DirEntry[str], real: str) -> str | None:
    """Why ``entry`` (in a trusted directory; ``real`` its resolved path) cannot be trusted, or None."""
    if entry.is_symlink() or status_problem is None:
        return _problem(entry.path)
    try:
        st = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None  # removed meanwhile: nothing will be read from it
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    return status_problem(st, real)


def _single_file(key: str, path: str, refusals: list[Refusal]) -> bool:
    """Whether the single file ``path`` may be loaded (a missing one is left to the loader)."""
    problem = _problem(path) if path else None
    if problem is not None:
        refusals.append(Refusal(key, path, problem, whole=True, is_dir=os.path.isdir(path)))
        return False
    return True


def check_rules(config: Config, *, sigma: bool = True, yara: bool = True, ioc: bool = True,
                simple: bool = True, sigma_key: str = "scanner.sigma_rules_path",
                force: bool | None = None) -> RuleTrust:
    """Check the rule paths of the enabled engines (those selected here) and narrow ``config`` to them.

    ``sigma_key`` is how messages name the Sigma paths (``--sigma`` when the
    command line gave them). ``force`` overrides the root test (tests check
    as a non-root user with it). Logs nothing: call :meth:`RuleTrust.log_refusals`.
    """
    as_root = running_as_root() if force is None else force
    if not as_root:
        return RuleTrust(config)
    enforced = config.agent.permissions == "enforce"
    refusals: list[Refusal] = []

    sigma_paths: list[str] | None = None
    if sigma and config.scanner.sigma_enabled:
        sigma_paths = []
        for path in config.sigma_paths():
            files = _trusted_files(sigma_key, path, SIGMA_SUFFIXES, refusals)
            if files is None:
                sigma_paths.append(path)
            else:
                sigma_paths.extend(str(f) for f in files)

    yara_files: tuple[Path, ...] | None = None
    if yara and config.scanner.yara_enabled:
        found = _trusted_files("scanner.yara_rules_path", config.scanner.yara_rules_path, YARA_SUFFIXES, refusals)
        yara_files = tuple(found) if found is not None else None

    ioc_ok = {key: True for key in _IOC_KEYS}
    if ioc and config.ioc.enabled:
        for key in _IOC_KEYS:
            ioc_ok[key] = _single_file(f"ioc.{key}", getattr(config.ioc, key), refusals)

    simple_ok = True
    if simple and config.simple.enabled:
        simple_ok = _single_file("simple.rules_path", config.simple.rules_path, refusals)

    if not enforced:
        return RuleTrust(config, tuple(refusals), enforced=False)
    narrowed = config
    if sigma_paths is not None and sigma_paths != config.sigma_paths():
        narrowed = attrs.evolve(narrowed, scanner=attrs.evolve(narrowed.scanner, sigma_rules_path=sigma_paths))
    refused_ioc = {key: "" for key, ok in ioc_ok.items() if not ok}
    if refused_ioc:
        narrowed = attrs.evolve(narrowed, ioc=attrs.evolve(narrowed.ioc, **refused_ioc))
    if not simple_ok:
        narrowed = attrs.evolve(narrowed, simple=attrs.evolve(narrowed.simple, rules_path=""))
    return RuleTrust(narrowed, tuple(refusals), enforced=True, yara_files=yara_files)


def trusted_sigma_paths(paths: Iterable[str], *, enforced: bool, key: str,
                        force: bool | None = None) -> tuple[list[str], tuple[Refusal, ...]]:
    """For ``edr rules check``: the Sigma ``paths`` to load and what was refused among them (named as ``key``)."""
    as_root = running_as_root() if force is None else force
    paths = list(paths)
    if not as_root:
        return paths, ()
    refusals: list[Refusal] = []
    out: list[str] = []
    for path in paths:
        files = _trusted_files(key, path, SIGMA_SUFFIXES, refusals)
        if files is None or not enforced:
            out.append(path)
        else:
            out.extend(str(f) for f in files)
    return out, tuple(refusals)
