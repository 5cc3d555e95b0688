"""``update`` against a real local HTTPS server whose certificate is trusted only through rules.ca_file."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import minisign
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edr.config import RulesConfig
from edr.rulepacks import PackError, PackStore, update
from tests.rulepacks.packs import make_zip, pack_entries, rule, settings, sigmahq_like, signed, sums, truncated

Handler = Callable[[BaseHTTPRequestHandler], None]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate it issued for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("edr test CA")).issuer_name(_name("edr test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class Server:
    """A threaded HTTP(S) server on 127.0.0.1 serving ``routes`` (path -> bytes, or a handler function)."""

    def __init__(self, routes: dict[str, bytes | Handler], tls: tuple[Path, Path] | None) -> None:
        self.routes = routes
        server = self

        class Handle(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                elif callable(route):
                    route(self)
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/zip")
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.httpd.daemon_threads = True
        scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.base = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_tls(tmp_path)


@pytest.fixture
def https(tls: tuple[Path, Path, Path]) -> Iterator[Server]:
    server = Server({}, (tls[1], tls[2]))
    yield server
    server.close()


@pytest.fixture
def plain_http() -> Iterator[Server]:
    server = Server({}, None)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test servers are on this machine: never go through a proxy from the environment."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _config(tmp_path: Path, tls: tuple[Path, Path, Path], **overrides: object) -> RulesConfig:
    return settings(tmp_path, ca_file=str(tls[0]), **overrides)


def test_only_the_good_pack_activates_when_signatures_are_required(
        tmp_path: Path, tls: tuple[Path, Path, Path], https: Server) -> None:
    key, stranger = minisign.KeyPair.generate(), minisign.KeyPair.generate()
    good_files = signed(sigmahq_like(3, tag="good"), key.secret_key)
    good = make_zip(tmp_path / "good.zip", good_files)
    later = sigmahq_like(6, tag="later")
    wrong_sum = dict(signed(later, key.secret_key))
    wrong_sum["rules/linux/process_creation/proc_later_0.yml"] = rule("Swapped after signing")
    https.routes.update({
        "/good.zip": good.read_bytes(),
        "/truncated.zip": truncated(make_zip(tmp_path / "t.zip", signed(later, key.secret_key)),
                                    tmp_path / "t-cut.zip").read_bytes(),
        "/wrong-sha256.zip": make_zip(tmp_path / "w.zip", wrong_sum).read_bytes(),
        "/bad-signature.zip": make_zip(tmp_path / "b.zip", signed(later, stranger.secret_key)).read_bytes(),
        "/unsigned.zip": make_zip(tmp_path / "u.zip", {**later, "SHA256SUMS": sums(later)}).read_bytes(),
    })
    cfg = _config(tmp_path, tls, require_signature=True, public_key=key.public_key.to_base64().decode())
    store = PackStore(cfg.store_directory)
    result = update(store, cfg, url=https.url("/good.zip"))
    assert result.changed and result.signature.status == "verified"
    assert result.download is not None and result.download.size == good.stat().st_size
    assert result.source == https.url("/good.zip") and result.loaded == 4
    assert result.source_sha256 == result.download.sha256
    for path, kind, words in [("/truncated.zip", "archive", "truncated"),
                              ("/wrong-sha256.zip", "integrity", "SHA-256 mismatch"),
                              ("/bad-signature.zip", "signature", "does not verify"),
                              ("/unsigned.zip", "signature", "not signed")]:
        with pytest.raises(PackError) as info:
            update(store, cfg, url=https.url(path))
        assert (info.value.kind, info.value.pack) == (kind, https.url(path)), info.value
        assert words in info.value.reason
        assert store.active_id() == result.pack_id
        assert pack_entries(tmp_path / "store") == [result.pack_id]
    # the configured URL is the default source
    again = update(store, _config(tmp_path, tls, require_signature=True, public_key=cfg.public_key,
                                  update_url=https.url("/good.zip")))
    assert not again.changed and again.pack_id == result.pack_id


def test_the_certificate_must_be_trusted(tmp_path: Path, tls: tuple[Path, Path, Path], https: Server) -> None:
    https.routes["/p.zip"] = make_zip(tmp_path / "p.zip", sigmahq_like(1)).read_bytes()
    with pytest.raises(PackError, match=r"not trusted.*rules\.ca_file") as info:
        update(tmp_path / "store", settings(tmp_path), url=https.url("/p.zip"))
    assert info.value.kind == "download"
    assert pack_entries(tmp_path / "store") == []
    with pytest.raises(PackError, match=r"rules\.ca_file: cannot load") as info:
        update(tmp_path / "store", settings(tmp_path, ca_file=str(tmp_path / "nope.pem")), url=https.url("/p.zip"))
    assert info.value.kind == "config"


def test_http_only_when_the_url_says_so_and_never_by_redirect(
        tmp_path: Path, tls: tuple[Path, Path, Path], https: Server, plain_http: Server) -> None:
    pack = make_zip(tmp_path / "p.zip", sigmahq_like(1)).read_bytes()
    plain_http.routes["/p.zip"] = pack
    cfg = _config(tmp_path, tls)
    assert update(cfg.store_directory, cfg, url=plain_http.url("/p.zip")).loaded == 2

    def downgrade(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", plain_http.url("/p.zip"))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def moved(handler: BaseHTTPRequestHandler) -> None:  # as GitHub's releases/latest/download answers
        handler.send_response(302)
        handler.send_header("Location", https.url("/p.zip"))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    https.routes.update({"/p.zip": pack, "/latest.zip": moved})
    followed = update(cfg.store_directory, cfg, url=https.url("/latest.zip"))
    assert followed.download is not None and followed.download.final_url == https.url("/p.zip")

    https.routes["/moved.zip"] = downgrade
    with pytest.raises(PackError, match="not HTTPS: refused") as info:
        update(cfg.store_directory, cfg, url=https.url("/moved.zip"))
    assert info.value.kind == "download"
    with pytest.raises(PackError, match="must be https://") as info:
        update(cfg.store_directory, cfg, url="file:///etc/passwd")
    assert info.value.kind == "config"
    with pytest.raises(ValueError, match="must be an https:// URL"):
        RulesConfig(update_url="ftp://mirror/pack.zip")


def test_download_limits(tmp_path: Path, tls: tuple[Path, Path, Path], https: Server) -> None:
    cfg = _config(tmp_path, tls, max_download_bytes=50_000, timeout_secs=1.0)
    https.routes["/big.zip"] = b"PK\x03\x04" + b"\0" * 60_000

    def no_length(handler: BaseHTTPRequestHandler) -> None:  # no Content-Length: counted as it arrives
        handler.send_response(200)
        handler.send_header("Connection", "close")
        handler.end_headers()
        for _ in range(10):
            handler.wfile.write(b"\0" * 10_000)

    def cut_short(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "40000")
        handler.end_headers()
        handler.wfile.write(b"PK\x03\x04" + b"\0" * 1000)
        handler.close_connection = True

    def stall(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "40000")
        handler.end_headers()
        handler.wfile.write(b"PK\x03\x04")
        handler.wfile.flush()
        time.sleep(3)

    https.routes.update({"/no-length.zip": no_length, "/cut.zip": cut_short, "/stall.zip": stall})
    for path, kind, words in [("/big.zip", "limit", "announces 60,004 bytes"),
                              ("/no-length.zip", "limit", "exceeds rules.max_download_bytes"),
                              ("/cut.zip", "download", "ended early"),
                              ("/stall.zip", "download", "did not answer"),
                              ("/missing.zip", "download", "HTTP 404")]:
        started = time.monotonic()
        with pytest.raises(PackError) as info:
            update(cfg.store_directory, cfg, url=https.url(path))
        assert info.value.kind == kind and words in info.value.reason, (path, info.value)
        assert time.monotonic() - started < 2.5
        assert pack_entries(tmp_path / "store") == []
