"""Reading a pack's source: a directory, a zip, or a tar (plain, gzip, bzip2 or xz).

Each reader does two things, in two passes: :meth:`Source.entries` lists
every member (name, kind, declared size) without reading any content, for
:func:`edr.rulepacks.layout.plan_pack` to check; :meth:`Source.read` then
yields the content of the members the plan names, in the archive's own
order, as chunks. Nothing here writes anything.

Archives are recognised by their first bytes, not their name (a download
URL may end in anything). A tar is read as a stream, twice, through a
counter that refuses to decompress more than the limits allow, so a gzip
bomb stops at the limit instead of filling memory. A directory is walked
without following links and hidden directories (``.git``) are not entered;
each file is opened without following a link and must still be the file
that was listed (same device and inode), so a directory another user can
write cannot swap a file for a link between listing and reading.

Read failures (a truncated or corrupt archive, a CRC mismatch) surface as
:class:`~edr.rulepacks.errors.PackError` of kind ``archive``.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import IO, Final, Protocol

from edr.rulepacks.errors import PackError
from edr.rulepacks.layout import Entry
from edr.rulepacks.settings import Limits

CHUNK: Final = 64 << 10
#: What a corrupt or truncated archive raises while it is read.
_ARCHIVE_ERRORS: Final = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
                          ValueError, NotImplementedError)
#: Bytes of tar headers and padding allowed per entry beyond the members' own bytes.
_TAR_OVERHEAD_PER_ENTRY: Final = 3 * 512

Chunks = Iterator[bytes]


class Source(Protocol):
    """A pack's source, listed then read (see the module doc)."""

    label: str
    kind: str  # "directory", "zip" or "tar"

    def entries(self) -> list[Entry]:
        """Every member, in order; raises PackError."""
        ...

    def read(self, names: Collection[str]) -> Iterator[tuple[str, Chunks]]:
        """(name, chunks) of each member in ``names``, in the source's order; raises PackError.

        Each chunk iterator must be consumed before the next pair is taken.
        """
        ...

    def close(self) -> None:
        """Release the source's files."""
        ...


def sniff(path: Path) -> str | None:
    """ "zip", "tar" (any compression) or None, from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or head[257:262] == b"ustar":
        return "tar"
    return None


def open_source(path: str | os.PathLike[str], limits: Limits, *, label: str | None = None) -> Source:
    """The reader for ``path`` (a directory or an archive file); raises PackError (``source``)."""
    path = Path(path)
    name = label or str(path)
    if path.is_dir():
        return DirectorySource(path, limits, label=name)
    if not path.is_file():
        raise PackError("source", "does not exist, or is neither a directory nor a file", pack=name)
    size = path.stat().st_size
    if size > limits.max_archive_bytes:
        raise PackError("limit", f"the archive is {size:,} bytes, more than rules.max_download_bytes "
                                 f"({limits.max_archive_bytes:,})", pack=name)
    kind = sniff(path)
    if kind == "zip":
        return ZipSource(path, limits, label=name)
    if kind == "tar":
        return TarSource(path, limits, label=name)
    raise PackError("source", "is neither a zip nor a tar archive (.zip, .tar.gz, .tgz, .tar.xz, .tar.bz2, "
                              ".tar), nor a directory", pack=name)


def _archive_error(exc: BaseException) -> PackError:
    detail = str(exc) or type(exc).__name__
    return PackError("archive", f"unreadable, truncated or corrupt archive: {detail}")


class ZipSource:
    """A zip archive, read with :mod:`zipfile` (random access; names as stored)."""

    kind = "zip"

    def __init__(self, path: Path, limits: Limits, *, label: str) -> None:
        self.label = label
        self.limits = limits
        try:
            self._zip = zipfile.ZipFile(path)
        except _ARCHIVE_ERRORS as exc:
            raise _archive_error(exc).in_pack(label) from exc

    def entries(self) -> list[Entry]:
        """See :class:`Source`."""
        out: list[Entry] = []
        for info in self._zip.infolist():
            mode = info.external_attr >> 16
            kind = "file"
            if info.is_dir():
                kind = "dir"
            elif info.create_system == 3 and stat.S_IFMT(mode):  # made on Unix: the mode is meaningful
                kind = _kind_of_mode(mode)
            problem = "is encrypted: encrypted packs are not supported" if info.flag_bits & 0x1 else None
            out.append(Entry(info.filename, kind, info.file_size, problem))
        return out

    def read(self, names: Collection[str]) -> Iterator[tuple[str, Chunks]]:
        """See :class:`Source`."""
        wanted = set(names)
        for info in self._zip.infolist():
            if info.filename in wanted:
                yield info.filename, self._chunks(info)

    def _chunks(self, info: zipfile.ZipInfo) -> Chunks:
        try:
            with self._zip.open(info) as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
        except _ARCHIVE_ERRORS as exc:
            raise _archive_error(exc).in_pack(self.label) from exc

    def close(self) -> None:
        """See :class:`Source`."""
        self._zip.close()


class _Bounded:
    """A read-only stream that refuses to yield more than ``limit`` bytes in all (a decompression bomb)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        self.raw = raw
        self.limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size if size is not None and size >= 0 else self.limit + 1 - self.count)
        self.count += len(data)
        if self.count > self.limit:
            raise PackError("limit", f"the archive decompresses to more than {self.limit:,} bytes "
                                     f"(rules.max_unpacked_bytes plus tar headers)")
        return data

    def close(self) -> None:
        self.raw.close()


class TarSource:
    """A tar archive, read as a stream (twice: list, then read) through a decompression counter."""

    kind = "tar"

    def __init__(self, path: Path, limits: Limits, *, label: str) -> None:
        self.label = label
        self.limits = limits
        self.path = path
        self._open: list[IO[bytes]] = []

    def _stream(self) -> tarfile.TarFile:
        raw = _open_decompressed(self.path)
        self._open.append(raw)
        limit = self.limits.max_unpacked_bytes + (self.limits.max_files + 2) * _TAR_OVERHEAD_PER_ENTRY
        return tarfile.open(fileobj=_Bounded(raw, limit), mode="r|")  # type: ignore[call-overload]

    def entries(self) -> list[Entry]:
        """See :class:`Source`."""
        out: list[Entry] = []
        try:
            with self._stream() as tar:
                for member in tar:
                    if len(out) >= self.limits.max_files:
                        raise PackError("limit", f"has more than rules.max_files ({self.limits.max_files:,}) "
                                                 f"entries", pack=self.label)
                    out.append(_tar_entry(member))
        except PackError as exc:
            raise exc.in_pack(self.label) from None
        except _ARCHIVE_ERRORS as exc:
            raise _archive_error(exc).in_pack(self.label) from exc
        finally:
            self.close()
        return out

    def read(self, names: Collection[str]) -> Iterator[tuple[str, Chunks]]:
        """See :class:`Source`."""
        wanted = set(names)
        try:
            with self._stream() as tar:
                for member in tar:
                    if member.name in wanted and member.isreg():
                        fh = tar.extractfile(member)
                        if fh is None:
                            raise PackError("archive", "cannot be read", member=member.name)
                        yield member.name, _file_chunks(fh)
        except PackError as exc:
            raise exc.in_pack(self.label) from None
        except _ARCHIVE_ERRORS as exc:
            raise _archive_error(exc).in_pack(self.label) from exc
        finally:
            self.close()

    def close(self) -> None:
        """See :class:`Source`."""
        while self._open:
            with contextlib.suppress(OSError):
                self._open.pop().close()


_DECOMPRESSORS: Final = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def _open_decompressed(path: Path) -> IO[bytes]:
    """``path`` opened for reading, through the decompressor its first bytes call for (the caller closes it)."""
    with open(path, "rb") as fh:
        magic = fh.read(6)
    for prefix, opener in _DECOMPRESSORS:
        if magic.startswith(prefix):
            return opener(path, "rb")  # type: ignore[no-any-return]
    return open(path, "rb")


def _file_chunks(fh: IO[bytes]) -> Chunks:
    while chunk := fh.read(CHUNK):
        yield chunk


def _tar_entry(member: tarfile.TarInfo) -> Entry:
    if member.isdir():
        return Entry(member.name, "dir")
    if member.issym():
        return Entry(member.name, "symlink")
    if member.islnk():
        return Entry(member.name, "hardlink")
    if member.ischr() or member.isblk():
        return Entry(member.name, "device")
    if member.isfifo():
        return Entry(member.name, "fifo")
    if member.issparse():
        return Entry(member.name, "file", member.size, "is a sparse file: not supported in a rule pack")
    if member.isreg():
        return Entry(member.name, "file", member.size)
    return Entry(member.name, "other")


def _kind_of_mode(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "other"


_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class DirectorySource:
    """A directory (a SigmaHQ checkout, an unpacked release), walked without following links."""

    kind = "directory"

    def __init__(self, path: Path, limits: Limits, *, label: str) -> None:
        self.label = label
        self.limits = limits
        self.root = Path(os.path.realpath(path))
        self._ids: dict[str, tuple[int, int]] = {}

    def entries(self) -> list[Entry]:
        """See :class:`Source`; hidden entries are neither listed nor entered."""
        out: list[Entry] = []

        def fail(exc: OSError) -> None:
            raise PackError("source", f"cannot be read: {exc.strerror or exc}", pack=self.label,
                            member=os.path.relpath(exc.filename or self.root, self.root))

        for top, dirs, files in os.walk(self.root, onerror=fail, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in (*dirs, *sorted(f for f in files if not f.startswith("."))):
                full = os.path.join(top, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                try:
                    st = os.lstat(full)
                except OSError as exc:
                    fail(exc)
                    raise  # unreachable: fail raises
                kind = _kind_of_mode(st.st_mode)
                out.append(Entry(rel, kind, st.st_size if kind == "file" else 0))
                self._ids[rel] = (st.st_dev, st.st_ino)
                if len(out) > self.limits.max_files:
                    raise PackError("limit", f"has more than rules.max_files ({self.limits.max_files:,}) "
                                             f"entries", pack=self.label)
        return out

    def read(self, names: Collection[str]) -> Iterator[tuple[str, Chunks]]:
        """See :class:`Source`."""
        for name in sorted(names):
            yield name, self._chunks(name)

    def _chunks(self, name: str) -> Chunks:
        try:
            fd = os.open(self.root / name, _OPEN_FLAGS)
        except OSError as exc:
            raise PackError("source", f"cannot be read: {exc.strerror or exc}", pack=self.label,
                            member=name) from exc
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != self._ids.get(name):
                raise PackError("source", "changed while the pack was being read (replaced or linked)",
                                pack=self.label, member=name)
            while chunk := fh.read(CHUNK):
                yield chunk

    def close(self) -> None:
        """See :class:`Source`."""
