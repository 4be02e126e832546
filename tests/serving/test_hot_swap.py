"""Acceptance 3: promote and roll back (move the alias) under load: no request fails; a broken version
keeps the old one serving and is reported."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.serving.conftest import running_server, serve_config


def _wait(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.integration
def test_promote_broken_version_and_rollback_under_load(registry, tmp_path):
    registry.point("swap", "a")
    cfg = serve_config(tmp_path, registry, {"traffic": {"swap": 100}, "drift": {"enabled": False}})
    results: list[tuple[int, str | None, float]] = []
    failures: list[str] = []
    stop = threading.Event()

    with running_server(cfg) as running:
        server = running.server

        def client_loop(i: int) -> None:
            with httpx.Client(base_url=running.url, timeout=60) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = {
                        "model": registry.name,
                        "messages": [{"role": "user", "content": f"question {i}-{n}"}],
                        "max_tokens": 4,
                        "stream": n % 3 == 0,
                    }
                    try:
                        r = client.post("/v1/chat/completions", json=body)
                        ok = r.status_code == 200 and (
                            not body["stream"] or r.text.rstrip().endswith("[DONE]")
                        )
                        if not ok or '"error"' in r.text:
                            failures.append(f"{r.status_code} {r.text[:200]}")
                        results.append((r.status_code, r.headers.get("x-tuneline-version"), time.monotonic()))
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            _wait(lambda: len(results) >= 20)
            v = registry.versions

            def serving(version: str) -> bool:
                return httpx.get(f"{running.url}/ready").json()["variants"]["swap"] == version

            registry.point("swap", "b")  # promote
            _wait(lambda: serving(v["b"]))
            mark = len(results)
            _wait(lambda: len(results) >= mark + 20)

            registry.point("swap", "broken")  # a version that cannot load
            _wait(lambda: server.metrics.load_failures.labels("swap")._value.get() >= 1)
            ready = httpx.get(f"{running.url}/ready").json()
            assert ready["variants"]["swap"] == v["b"] and "version " + v["broken"] in ready["errors"]["swap"]
            metrics = httpx.get(f"{running.url}/metrics").text
            assert 'tuneline:model_load_failed{variant="swap"} 1.0' in metrics
            mark = len(results)
            _wait(lambda: len(results) >= mark + 20)

            registry.point("swap", "a")  # roll back
            _wait(lambda: serving(v["a"]))
            mark = len(results)
            _wait(lambda: len(results) >= mark + 20)
        finally:
            stop.set()
            for t in threads:
                t.join()

        assert failures == []
        versions = [ver for _, ver, _ in sorted(results, key=lambda r: r[2])]
        # Each version served in turn (a, then b, then a again); never the broken one.
        changes = [versions[0]] + [b for a, b in zip(versions, versions[1:], strict=False) if a != b]
        assert changes[0] == v["a"] and v["b"] in changes and changes[-1] == v["a"]
        assert v["broken"] not in versions
        metrics = httpx.get(f"{running.url}/metrics").text
        assert 'tuneline:model_load_failed{variant="swap"} 0.0' in metrics
        assert f'tuneline:model_version{{variant="swap"}} {float(v["a"])}' in metrics
        # Retired adapters are unloaded once their last request finished: one adapter left.
        host = next(iter(server.engine.hosts.values()))
        _wait(lambda: host.call(lambda: set(host.adapters)) == {f"swap_v{v['a']}"})
        print(f"{len(results)} requests, 0 failed; versions served in order: {changes}")


def test_a_version_with_pickled_weights_is_refused_and_never_cached(registry, tmp_path):
    """Never unpickle: a registered version carrying a .bin pickle fails to download, clearly."""
    from tuneline.errors import ModelError
    from tuneline.serving.sources import RegistrySource

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # pickle.dumps(1)
    name = "pickled-weights"  # its own registered model: the shared one's versions stay as they are
    registry.client.create_registered_model(name)
    mv = registry.client.create_model_version(name, source=str(folder))
    registry.client.set_registered_model_alias(name, "champion", mv.version)
    source = RegistrySource(registry.uri, name, tmp_path / "state")
    ref = source.resolve("champion")
    with pytest.raises(ModelError, match=r"adapter_model\.bin.*never unpickles"):
        source.download(ref)
    assert not (tmp_path / "state" / "models" / name / ref.version).exists()
