"""Acceptance 4: the same commands against a real MLflow tracking server (`mlflow server`, SQLite backend,
artifacts served by the server from a local folder) started by the test on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from tests.registry.conftest import aliases, mlflow_client
from tuneline.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "server-artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"

    def ready() -> None:  # called by the test: the server boots while the tiny runs are built
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                return
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    text = (tmp_path / "server.log").read_text()[-3000:]
                    pytest.fail(f"mlflow server did not start:\n{text}")
                time.sleep(0.5)

    yield uri, proc, ready
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_the_registry_commands_against_a_tracking_server(server, two_runs, workdir):
    from tuneline.registry.resolve import resolve
    from tuneline.runs import RunDir

    uri, proc, ready = server
    ready()
    at = ("--tracking-uri", uri)
    assert "tiny version 1 (challenger)" in ok("models", "register", str(two_runs.passed), *at)
    assert "tiny version 2 (challenger)" in ok("models", "register", str(two_runs.failed), *at)
    assert "tiny version 1" in ok("models", "register", str(two_runs.passed), *at)  # no duplicate
    c = mlflow_client(uri)
    assert len(c.search_model_versions("name = 'tiny'")) == 2
    assert c.get_model_version("tiny", "1").source.startswith("mlflow-artifacts:/")  # served by the server
    assert not (workdir / ".tuneline" / "mlflow.db").exists()  # nothing went to the default store

    assert runner.invoke(app, ["models", "promote", "tiny", *at]).exit_code == 7  # v2's gate failed
    assert aliases(c) == {"challenger": "2"}
    ok("models", "promote", "tiny", "1", *at)
    assert aliases(c) == {"challenger": "2", "champion": "1"}
    ok("models", "promote", "tiny", "2", "--force", "--reason", "server test", *at)
    assert aliases(c) == {"champion": "2", "previous-champion": "1"}
    assert c.get_model_version("tiny", "2").tags["tuneline.forced_reason"] == "server test"
    ok("models", "rollback", "tiny", *at)
    assert aliases(c) == {"champion": "1"}

    shown = ok("models", "show", "tiny@champion", *at)
    assert RunDir(two_runs.passed).summary()["data"]["fingerprint"] in shown and "## Gate" in shown
    assert "champion history (oldest first): 1" in ok("models", "list", "tiny", *at)

    # models:/ references resolve through the server, artifacts downloaded through it.
    rm = resolve("models:/tiny@champion", uri)
    assert rm.version == "1" and (rm.source_dir / "adapter_model.safetensors").is_file()
    out = workdir / "adapter"
    ok("export", "tiny@champion", "--format", "adapter", str(out), *at)
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()

    # The server goes away: a clear error, quickly.
    proc.terminate()
    proc.wait(15)
    started = time.monotonic()
    gone = runner.invoke(app, ["models", "promote", "tiny", "2", "--force", "--reason", "x", *at])
    assert gone.exit_code == 5 and "cannot reach the MLflow tracking server" in gone.output
    assert time.monotonic() - started < 60  # MLflow's own retries would take minutes: a hang guard
