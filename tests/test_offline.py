"""run.offline: a socket-level guard refuses every connection that leaves the machine during a stage."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import urllib.request

import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_RUN, write_config
from tuneline import offline
from tuneline.cli import app
from tuneline.errors import OfflineViolation

OUTSIDE = ("203.0.113.9", 443)  # TEST-NET-3: never routed, so an unguarded connect would only time out


def test_guard_refuses_outbound_connect_naming_it():
    wanted = r"stage train tried to open a network connection to 203\.0\.113\.9:443"
    with pytest.raises(OfflineViolation, match=wanted):
        with offline.guard("train"):
            socket.create_connection(OUTSIDE, timeout=0.5)


def test_guard_refuses_resolving_a_remote_name():
    with pytest.raises(OfflineViolation, match=r"huggingface\.co:443"):
        with offline.guard("prepare"):
            socket.getaddrinfo("huggingface.co", 443)


def test_swallowed_attempt_still_fails_the_block():
    """A library that catches everything (a reachability probe) cannot hide the attempt."""
    with pytest.raises(OfflineViolation, match=r"example\.org:80"):
        with offline.guard("evaluate"):
            try:
                urllib.request.urlopen("http://example.org/", timeout=0.5)
            except Exception:  # noqa: BLE001 - the point of the test
                pass


def test_wrapped_attempt_is_reported_as_the_violation():
    with pytest.raises(OfflineViolation, match=r"203\.0\.113\.9:443") as caught:
        with offline.guard("register"):
            try:
                socket.create_connection(OUTSIDE, timeout=0.5)
            except OfflineViolation as exc:
                raise RuntimeError("could not reach the tracking server") from exc
    assert isinstance(caught.value.__cause__, RuntimeError)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(self.request.recv(16))


def test_loopback_and_unix_sockets_stay_allowed(tmp_path):
    server = socketserver.TCPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        with offline.guard("serve"):
            for host in ("127.0.0.1", "localhost"):
                if host == "localhost":
                    threading.Thread(target=server.handle_request, daemon=True).start()
                with socket.create_connection((host, server.server_address[1]), timeout=5) as conn:
                    conn.sendall(b"ping")
                    assert conn.recv(16) == b"ping"
            path = str(tmp_path / "s.sock")
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(path)
            listener.listen(1)
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(path)
            listener.close()
    finally:
        server.server_close()


def test_guard_is_off_outside_a_stage():
    assert not offline.active()
    try:
        socket.create_connection(OUTSIDE, timeout=0.01)
    except OfflineViolation:  # pragma: no cover - the failure this test exists to catch
        pytest.fail("the guard acted outside a guarded block")
    except OSError:
        pass  # no route / timeout: the connection was attempted, as it should be


def test_default_follows_hf_hub_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline.resolve(None) is True and offline.resolve(False) is False
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert offline.resolve(None) is False and offline.resolve(True) is True


def _phoning_prepare(real):
    """The real prepare stage, then a call home that swallows its own error."""

    def run(cfg, run_dir):
        result = real(cfg, run_dir)
        try:
            socket.create_connection(OUTSIDE, timeout=0.5)
        except Exception:  # noqa: BLE001
            pass
        return result

    return run


def test_stage_that_connects_out_fails_naming_the_destination(shapes_dir, workdir, monkeypatch):
    from tuneline.stages import prepare

    monkeypatch.setattr(prepare, "run", _phoning_prepare(prepare.run))
    config = write_config(workdir, TINY_RUN.format(data=shapes_dir / "data.jsonl", steps=2))
    result = CliRunner().invoke(app, ["prepare", str(config)])
    assert result.exit_code == OfflineViolation.exit_code, result.output
    assert "stage prepare tried to open a network connection to 203.0.113.9:443" in result.output
    (run_dir,) = (workdir / "runs" / "tiny").iterdir()
    assert "203.0.113.9:443" in (run_dir / "FAILED").read_text()
    assert json.loads((run_dir / "summary.json").read_text())["failed_stage"] == "prepare"
    assert json.loads((run_dir / "provenance.json").read_text())["offline"] == {"prepare": True}


def test_offline_false_lets_the_stage_connect(shapes_dir, workdir, monkeypatch):
    from tuneline.stages import prepare

    monkeypatch.setattr(prepare, "run", _phoning_prepare(prepare.run))
    config = write_config(workdir, TINY_RUN.format(data=shapes_dir / "data.jsonl", steps=2))
    result = CliRunner().invoke(app, ["prepare", str(config), "--set", "run.offline=false"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (workdir / "runs" / "tiny").iterdir()
    assert json.loads((run_dir / "provenance.json").read_text())["offline"] == {"prepare": False}
