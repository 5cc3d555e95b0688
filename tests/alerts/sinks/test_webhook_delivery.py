"""A real HTTP receiver gets every alert of a replay exactly once, signed, through 503s, Retry-After and a SIGKILL."""

from __future__ import annotations

import collections
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import trio

from edr.config import WebhookConfig
from edr.runtime.supervisor import Supervisor
from edr.sink_targets import webhook_display

from .conftest import cron_events, file_alert_ids, replay_in_process, sink_config, write_recording
from .webhook_receiver import WebhookReceiver, http_date

pytestmark = pytest.mark.slow

SECRET = b"0123456789abcdef0123456789abcdef"
REPO = Path(__file__).resolve().parents[3]


def secret_file(tmp_path: Path, data: bytes = SECRET) -> Path:
    path = tmp_path / "webhook.secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data + b"\n")
    return path


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
def test_503_with_retry_after_then_every_alert_exactly_once_and_signed(tmp_path: Path, fmt: str) -> None:
    n = 2000
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    # Retry-After as seconds, then as an HTTP date two seconds ahead, then seconds again.
    answers = (lambda: "1", lambda: http_date(2), lambda: "1")
    with WebhookReceiver(SECRET, fail_first=3, retry_after=answers, fmt=fmt) as receiver:
        config = sink_config(tmp_path, webhook={
            "urls": [receiver.url], "replay": True, "format": fmt, "secret_file": str(secret_file(tmp_path)),
            "spool_directory": str(tmp_path / "spool"), "max_batch_alerts": 300, "drain_secs": 60.0,
            # a backoff far shorter than Retry-After: the waits measured below are the receiver's
            "retry_initial_secs": 0.01, "retry_max_secs": 0.02})
        sup = replay_in_process(config, [recording])
    file_ids = file_alert_ids(tmp_path / "out")
    assert len(file_ids) == n == len(set(file_ids))
    assert receiver.bad_signatures == 0 and all(r.signed for r in receiver.requests)
    assert collections.Counter(receiver.accepted_ids) == collections.Counter(file_ids)  # each exactly once
    statuses = [r.status for r in receiver.requests]
    assert statuses[:4] == [503, 503, 503, 200], statuses
    # Retry-After honoured: "1" waits at least 1 s, the HTTP date (2 s ahead, 1 s resolution) at least 1 s
    gaps = [later.at - earlier.at for earlier, later in zip(receiver.requests[:3], receiver.requests[1:4],
                                                            strict=True)]
    assert all(gap >= 0.95 for gap in gaps), gaps
    stats = sup.actors["webhook"].statistics()
    assert (stats["sent"], stats["failed"], stats["queued"], stats["lost"]) == (n, 3, 0, 0), stats
    assert stats["spooled"] == n


def test_alerts_spooled_while_the_receiver_is_down_survive_a_sigkill(tmp_path: Path) -> None:
    """The replay runs in its own process while the receiver answers 503; once everything is spooled it is
    killed with SIGKILL; a new run with nothing to replay delivers what the spool holds, each alert once."""
    n = 3000
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    empty = write_recording(tmp_path / "nothing.ndjson", [])
    secret = secret_file(tmp_path)
    stats_file = tmp_path / "stats.json"
    with WebhookReceiver(SECRET) as receiver:
        receiver.down = True
        webhook = {"urls": [receiver.url], "replay": True, "secret_file": str(secret),
                   "spool_directory": str(tmp_path / "spool"), "drain_secs": 600.0,
                   "retry_initial_secs": 0.05, "retry_max_secs": 0.2}
        spec = {"workdir": str(tmp_path), "recording": str(recording), "webhook": webhook,
                "stats": str(stats_file)}
        child = subprocess.Popen([sys.executable, "-m", "tests.alerts.sinks.replay_child", orjson.dumps(spec).decode()],
                                 cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            stats: dict[str, int] = {}
            while time.monotonic() < deadline and child.poll() is None:
                if stats_file.exists():
                    stats = orjson.loads(stats_file.read_bytes())
                    if stats.get("spooled") == n and stats.get("failed", 0) >= 2:
                        break
                time.sleep(0.02)
            assert child.poll() is None, child.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
            assert stats.get("spooled") == n, stats
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        assert receiver.accepted_ids == [] and receiver.requests and all(r.status == 503 for r in receiver.requests)
        file_ids = file_alert_ids(tmp_path / "out")
        assert len(file_ids) == n == len(set(file_ids))

        receiver.down = False
        config = sink_config(tmp_path, webhook=webhook | {"drain_secs": 60.0})
        sup = replay_in_process(config, [empty])
    assert receiver.bad_signatures == 0
    assert collections.Counter(receiver.accepted_ids) == collections.Counter(file_ids)
    after = sup.actors["webhook"].statistics()
    assert after["sent"] == n and after["queued"] == 0 and after["lost"] == 0, after
    assert after["destinations"][webhook_display(receiver.url)]["recovered"] == n, after


def test_a_document_the_receiver_refuses_is_found_by_halving_and_set_aside(tmp_path: Path) -> None:
    n = 400
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    with WebhookReceiver(SECRET) as receiver:
        config = sink_config(tmp_path, webhook={
            "urls": [receiver.url], "replay": True, "secret_file": str(secret_file(tmp_path)),
            "spool_directory": str(tmp_path / "spool"), "max_batch_alerts": 100, "drain_secs": 60.0})
        poison = file_alert_ids_of(recording, config)[137]
        receiver.poison.add(poison)
        sup = replay_in_process(config, [recording])
    file_ids = file_alert_ids(tmp_path / "out")
    assert collections.Counter(receiver.accepted_ids) == collections.Counter(i for i in file_ids if i != poison)
    stats = sup.actors["webhook"].statistics()
    each = stats["destinations"][webhook_display(receiver.url)]
    assert (stats["sent"], each["rejected"], stats["queued"], stats["lost"]) == (n - 1, 1, 0, 0), stats
    assert each["splits"] >= 6  # 100 -> 50 -> 25 -> 12 -> 6 -> 3 -> 1
    assert [r.status for r in receiver.requests].count(422) == each["splits"] + 1


def file_alert_ids_of(recording: Path, config: object) -> list[str]:
    """The ids the alerts of ``recording`` get, from a replay of it without sinks into a directory of its own."""
    scratch = recording.parent / "scratch"
    scratch.mkdir()
    replay_in_process(sink_config(scratch), [recording])
    return file_alert_ids(scratch / "out")


@pytest.mark.slow
def test_a_secret_file_others_can_read_holds_delivery_back_until_it_is_fixed(tmp_path: Path) -> None:
    """Nothing goes unsigned: while the secret file is mode 0644 no request is made (the failure names the file);
    once it is 0600 every alert is delivered, signed."""
    n = 50
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    secret = secret_file(tmp_path)
    secret.chmod(0o644)
    seen: dict[str, object] = {}
    with WebhookReceiver(SECRET) as receiver:
        config = sink_config(tmp_path, webhook={
            "urls": [receiver.url], "replay": True, "secret_file": str(secret), "drain_secs": 60.0,
            "spool_directory": str(tmp_path / "spool"), "retry_initial_secs": 0.05, "retry_max_secs": 0.1})

        async def fix_the_mode(sup: Supervisor) -> None:
            while sup.actors["webhook"].statistics().get("failed", 0) < 2:
                await trio.sleep(0.01)
            seen["requests_before"] = len(receiver.requests)
            each = sup.actors["webhook"].statistics()["destinations"]
            seen["error"] = each[webhook_display(receiver.url)]["last_error"]
            secret.chmod(0o600)

        sup = replay_in_process(config, [recording], background=[fix_the_mode])
    assert seen["requests_before"] == 0
    assert str(secret) in str(seen["error"]) and "chmod 600" in str(seen["error"])
    assert collections.Counter(receiver.accepted_ids) == collections.Counter(file_alert_ids(tmp_path / "out"))
    assert receiver.bad_signatures == 0 and sup.actors["webhook"].statistics()["sent"] == n


def test_https_with_a_ca_file_and_a_client_certificate(tmp_path: Path, pki: Path) -> None:
    n = 100
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    with WebhookReceiver(SECRET, tls=context) as receiver:
        assert receiver.url.startswith("https://")
        config = sink_config(tmp_path, webhook={
            "urls": [receiver.url], "replay": True, "secret_file": str(secret_file(tmp_path)),
            "ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"), "key_file": str(pki / "client.key"),
            "spool_directory": str(tmp_path / "spool"), "drain_secs": 60.0})
        sup = replay_in_process(config, [recording])
    assert collections.Counter(receiver.accepted_ids) == collections.Counter(file_alert_ids(tmp_path / "out"))
    assert set(receiver.peers) == {"client"} and receiver.bad_signatures == 0
    assert sup.actors["webhook"].statistics()["sent"] == n


def test_each_url_has_its_own_queue_one_down_does_not_hold_back_the_other(tmp_path: Path) -> None:
    n = 300
    recording = write_recording(tmp_path / "events.ndjson", cron_events(n))
    with WebhookReceiver(SECRET) as up, WebhookReceiver(SECRET) as down:
        down.down = True
        config = sink_config(tmp_path, webhook={
            "urls": [down.url, up.url], "replay": True, "secret_file": str(secret_file(tmp_path)),
            "spool_directory": str(tmp_path / "spool"), "drain_secs": 2.0, "retry_initial_secs": 0.05,
            "retry_max_secs": 0.1})
        sup = replay_in_process(config, [recording])
    assert collections.Counter(up.accepted_ids) == collections.Counter(file_alert_ids(tmp_path / "out"))
    assert down.accepted_ids == [] and down.requests
    each = sup.actors["webhook"].statistics()["destinations"]
    ok, ko = each[webhook_display(up.url)], each[webhook_display(down.url)]
    assert (ok["sent"], ok["queued"]) == (n, 0)
    assert (ko["sent"], ko["queued"], ko["lost"]) == (0, n, 0)
    assert len({p.name for p in (tmp_path / "spool").iterdir()}) == 2


def test_a_token_in_the_url_is_not_shown_in_logs_statistics_or_spool_names(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Webhook URLs often carry the receiver's token (in the path or the query); the receiver is down here so
    that failures are logged."""
    recording = write_recording(tmp_path / "events.ndjson", cron_events(10))
    with WebhookReceiver(SECRET) as receiver:
        receiver.down = True
        url = receiver.url + "/T0123/B0456/sEcReTtOkEn?token=sEcReTtOkEn"
        config = sink_config(tmp_path, webhook={
            "urls": [url], "replay": True, "secret_file": str(secret_file(tmp_path)), "drain_secs": 0.5,
            "spool_directory": str(tmp_path / "spool"), "retry_initial_secs": 0.05, "retry_max_secs": 0.1})
        sup = replay_in_process(config, [recording])
    assert receiver.requests  # the URL was used as written
    stats = sup.actors["webhook"].statistics()
    assert stats["failed"] >= 1 and "503" in caplog.text
    shown = webhook_display(url)
    assert shown.startswith(receiver.url.rsplit("/", 1)[0] + "/… #") and list(stats["destinations"]) == [shown]
    for text in (caplog.text, orjson.dumps(stats).decode(), *(p.name for p in (tmp_path / "spool").iterdir())):
        assert "sEcReTtOkEn" not in text
    with pytest.raises(ValueError) as bad:
        WebhookConfig(urls=["ftp://siem/sEcReTtOkEn"])
    assert "sEcReTtOkEn" not in str(bad.value) and "https://" in str(bad.value)
