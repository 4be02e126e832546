"""Two promotes racing end consistent; a registry that cannot be reached, or fails half way through a
change, gives a clear error and leaves the aliases as they were."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from tests.registry.conftest import aliases, mlflow_client
from tuneline.cli import app
from tuneline.errors import RegistryError
from tuneline.registry import aliases as al
from tuneline.registry import store

runner = CliRunner()


@pytest.fixture
def two_versions(two_runs, workdir):
    """v1 (gate passed) and v2 (gate failed) in the default store of a fresh directory."""
    for run in (two_runs.passed, two_runs.failed):
        result = runner.invoke(app, ["models", "register", str(run)])
        assert result.exit_code == 0, result.output
    return f"sqlite:///{workdir / '.tuneline' / 'mlflow.db'}"


def _state(uri: str) -> tuple[dict, list[str], int]:
    rm = mlflow_client(uri).get_registered_model("tiny")
    history = [h["version"] for h in json.loads(rm.tags.get(al.HISTORY_TAG, "[]"))]
    return aliases(mlflow_client(uri)), history, int(rm.tags.get(al.SEQ_TAG, 0))


def test_two_racing_promotes_end_consistent(two_versions, monkeypatch):
    # Widen the window between reading the state and writing it, as a slow registry would: without the
    # lock both promotes would read "no champion" and one change would be lost.
    write = al._write
    entered = threading.Barrier(2, timeout=30)
    read_state = al.read_state

    def slow_read(c, name):
        state = read_state(c, name)
        time.sleep(0.3)
        return state

    def slow_write(*args, **kwargs):
        time.sleep(0.3)
        return write(*args, **kwargs)

    monkeypatch.setattr(al, "read_state", slow_read)
    monkeypatch.setattr(al, "_write", slow_write)
    results: dict[str, object] = {}

    def promote(version: str, force: bool) -> None:
        c = store.client(two_versions)  # each thread its own client, as two processes would have
        entered.wait()
        try:
            results[version] = al.promote(
                c, "tiny", version, force=force, reason="race test" if force else None
            )
        except RegistryError as exc:  # allowed: a clear error for the loser
            results[version] = exc

    threads = [threading.Thread(target=promote, args=a) for a in (("1", False), ("2", True))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    changes = [r for r in results.values() if isinstance(r, al.AliasChange)]
    assert len(results) == 2 and changes, results
    got_aliases, history, seq = _state(two_versions)
    # Consistent: every change that reported success is in the history, once, in the order it happened;
    # the counter counts them; champion and previous-champion are the last two entries.
    assert seq == len(changes) == len(history)
    assert sorted(history) == sorted(c.champion for c in changes)
    assert got_aliases.get("champion") == history[-1]
    assert got_aliases.get("previous-champion") == (history[-2] if len(history) > 1 else None)
    assert {c.seq for c in changes} == set(range(1, len(changes) + 1))
    # The lock is gone.
    assert not mlflow_client(two_versions).search_registered_models(f"name = 'tiny{al.LOCK_SUFFIX}'")


def test_a_held_lock_makes_a_promote_fail_clearly_and_change_nothing(two_versions):
    c = store.client(two_versions)
    before = _state(two_versions)
    with al.registry_lock(c, "tiny"):
        started = time.monotonic()
        with pytest.raises(RegistryError, match="is being changed by .*pid"):
            al.promote(store.client(two_versions), "tiny", "1", lock_timeout=0.5)
        assert time.monotonic() - started < 25  # lock_timeout=0.5 honoured, not the 30 s default
    assert _state(two_versions) == before
    al.promote(c, "tiny", "1")  # released: works again
    assert _state(two_versions)[0]["champion"] == "1"


def test_registry_failing_half_way_leaves_everything_as_it_was(two_versions, monkeypatch):
    c = store.client(two_versions)
    al.promote(c, "tiny", "1")
    before = _state(two_versions)
    v2_tags = dict(c.get_model_version("tiny", "2").tags)

    cls = type(c)
    real_tag, real_alias = cls.set_registered_model_tag, cls.set_registered_model_alias
    registry = {"hiccups": 1, "gone": False}

    def failing_tag(self, name, key, value):
        if registry["gone"]:
            raise ConnectionError("registry went away")
        if key == al.HISTORY_TAG and registry["hiccups"]:  # the aliases were already moved by now
            registry["hiccups"] -= 1
            raise ConnectionError("registry went away")
        return real_tag(self, name, key, value)

    def failing_alias(self, name, alias, version):
        if registry["gone"]:
            raise ConnectionError("registry went away")
        return real_alias(self, name, alias, version)

    monkeypatch.setattr(cls, "set_registered_model_tag", failing_tag)
    monkeypatch.setattr(cls, "set_registered_model_alias", failing_alias)
    with pytest.raises(RegistryError, match="registry went away") as info:
        al.promote(c, "tiny", "2", force=True, reason="will fail")
    assert "nothing was changed" in str(info.value)
    assert _state(two_versions) == before
    assert dict(c.get_model_version("tiny", "2").tags) == v2_tags  # the forced-by record was taken back

    # A registry that stays away cannot be put back: the aliases moved, the history did not. The next
    # command repairs the history from the aliases and records the promotion properly.
    def gone_after_aliases(self, name, key, value):
        registry["gone"] = True
        raise ConnectionError("registry went away")

    monkeypatch.setattr(cls, "set_registered_model_tag", gone_after_aliases)
    with pytest.raises(RegistryError, match="could not be put back"):
        al.promote(c, "tiny", "2", force=True, reason="will fail")
    registry["gone"] = False
    assert _state(two_versions)[0]["champion"] == "2" and _state(two_versions)[1] == ["1"]
    monkeypatch.undo()
    change = al.promote(c, "tiny", "2", force=True, reason="retried")
    assert change.action == "promote" and change.history == ["1", "2"]
    got_aliases, history, _ = _state(two_versions)
    assert got_aliases == {"champion": "2", "previous-champion": "1"} and history == ["1", "2"]
    assert c.get_model_version("tiny", "2").tags["tuneline.forced_reason"] == "retried"
    assert al.rollback(c, "tiny").champion == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_registry_is_a_clear_error(two_versions, workdir):
    before = _state(two_versions)
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    result = runner.invoke(app, ["models", "promote", "tiny", "1", "--tracking-uri", uri])
    assert result.exit_code == 5, result.output
    assert f"cannot reach the MLflow tracking server at {uri}" in result.output
    assert time.monotonic() - started < 60  # MLflow's own retries would take minutes: a hang guard
    assert _state(two_versions) == before

    # A store path that does not exist is an error too, and is not created.
    missing = workdir / "elsewhere" / "mlflow.db"
    result = runner.invoke(app, ["models", "list", "tiny", "--tracking-uri", f"sqlite:///{missing}"])
    assert result.exit_code == 5 and "no MLflow store at" in result.output
    assert not missing.exists()


def test_a_stale_lock_left_by_a_crashed_process_is_broken(two_versions, monkeypatch):
    c = store.client(two_versions)
    c.create_registered_model(f"tiny{al.LOCK_SUFFIX}", tags={"tuneline.lock_holder": "crashed pid 1"})
    with pytest.raises(RegistryError, match="crashed pid 1"):
        al.promote(c, "tiny", "1", lock_timeout=0.3)
    monkeypatch.setattr(al, "LOCK_STALE_S", 0.0)  # as if it were ten minutes old
    assert al.promote(c, "tiny", "1", lock_timeout=5).champion == "1"


@pytest.mark.integration
def test_two_promote_processes_at_once_end_consistent(two_versions, workdir):
    """Two `tuneline models promote` processes started together on one SQLite store."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    commands = [
        ["models", "promote", "tiny", "1"],
        ["models", "promote", "tiny", "2", "--force", "--reason", "process race"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tuneline", *cmd],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for cmd in commands
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert all(code in (0, 5) for code in codes) and 0 in codes, outputs
    for code, output in zip(codes, outputs, strict=True):
        if code == 5:  # the loser may only fail with a clear registry error
            assert "error:" in output and "Traceback" not in output, output
    got_aliases, history, seq = _state(two_versions)
    assert seq == codes.count(0) == len(history)
    assert got_aliases["champion"] == history[-1]
    assert got_aliases.get("previous-champion") == (history[-2] if len(history) > 1 else None)
