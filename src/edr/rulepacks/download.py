"""Downloading a pack: HTTPS with a CA file of one's choosing, a deadline and a size limit.

Uses the standard library's :mod:`urllib.request` (proxies from the usual
``https_proxy``/``no_proxy`` variables). ``http://`` is accepted only when
the configured URL says so; a redirect may never go from HTTPS to HTTP (or
to any other scheme). The archive is written to a file the caller owns
(in the store's staging area) and hashed as it arrives; it is refused as
soon as it grows past the limit, and when the server announced a length
the body must have exactly that many bytes (a connection cut short is a
failed download, not a truncated pack to try to read).
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import ssl
import time
import urllib.error
import urllib.request
from typing import IO, Any, Final
from urllib.parse import urlsplit

import attrs

from edr import __version__
from edr.config import RulesConfig
from edr.progress import Progress
from edr.rulepacks.errors import PackError

CHUNK: Final = 64 << 10
#: Longest silence of the connection, whatever the overall deadline.
SOCKET_TIMEOUT: Final = 30.0
MAX_REDIRECTS: Final = 5


@attrs.frozen
class Downloaded:
    """A finished download: the URL asked for, the one that answered (after redirects), size and SHA-256."""

    url: str
    final_url: str
    size: int
    sha256: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return attrs.asdict(self)


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to HTTPS (or HTTP when the configured URL was HTTP)."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, allow_http: bool) -> None:
        super().__init__()
        self.allow_http = allow_http

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        scheme = urlsplit(newurl).scheme.lower()
        if scheme != "https" and not (scheme == "http" and self.allow_http):
            raise PackError("download", f"the server redirected to {newurl}, which is not HTTPS: refused")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _context(ca_file: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise PackError("config", f"rules.ca_file: cannot load {ca_file}: {exc}") from None


def _reason(exc: BaseException, url: str) -> str:
    host = urlsplit(url).hostname or url
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason} from {url}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"the TLS certificate of {host} is not trusted ({reason.verify_message}); "
                f"set rules.ca_file to the CA that issued it")
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"{host} did not answer within the timeout"
    if isinstance(reason, http.client.IncompleteRead):
        return f"the download from {host} ended early ({reason})"
    return f"cannot download {url}: {reason}"


def download(url: str, dest: IO[bytes], settings: RulesConfig, progress: Progress) -> Downloaded:
    """Fetch ``url`` into ``dest`` within ``settings``' limits; raises PackError (``download``, ``limit``, ``config``).

    Blocking: from Trio, call it in a worker thread. ``timeout_secs`` bounds
    the whole transfer (checked between reads; each read waits at most
    :data:`SOCKET_TIMEOUT` seconds).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("https", "http"):
        raise PackError("config", f"rules.update_url must be https:// (or explicitly http://), not {url!r}")
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=_context(settings.ca_file)), _NoDowngrade(scheme == "http"))
    request = urllib.request.Request(url, headers={"User-Agent": f"edr/{__version__} (rule pack update)"})
    limit = settings.max_download_bytes
    started = time.monotonic()
    deadline = started + settings.timeout_secs
    digest = hashlib.sha256()
    size = 0
    try:
        with opener.open(request, timeout=min(SOCKET_TIMEOUT, settings.timeout_secs)) as response:
            final_url = response.geturl()
            announced = response.headers.get("Content-Length")
            length = int(announced) if announced and announced.isdigit() else None
            if length is not None and length > limit:
                raise PackError("limit", f"the server announces {length:,} bytes, more than "
                                         f"rules.max_download_bytes ({limit:,})")
            progress.begin("download", length, "B")
            try:
                while chunk := response.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PackError("limit", f"the download exceeds rules.max_download_bytes ({limit:,} bytes)")
                    if time.monotonic() > deadline:
                        raise PackError("download", f"not finished after rules.timeout_secs "
                                                    f"({settings.timeout_secs:g} s)")
                    digest.update(chunk)
                    dest.write(chunk)
                    progress.advance(len(chunk))
            finally:
                progress.end()
    except PackError as exc:
        raise exc.in_pack(url) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise PackError("download", _reason(exc, url), pack=url) from None
    if length is not None and size != length:
        raise PackError("download", f"the download ended early: {size:,} of {length:,} bytes", pack=url)
    dest.flush()
    return Downloaded(url=url, final_url=final_url, size=size, sha256=digest.hexdigest(),
                      seconds=time.monotonic() - started)
