"""Load test of `tuneline serve`: a real server process on loopback, N concurrent clients for a fixed time.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_serve.py [--seconds 60] [--max-tokens 16]

A tiny LoRA adapter on tiny:gemma3 is registered in a temporary MLflow store; each scenario starts
`python -m tuneline serve` as a subprocess with its own settings and drives it with threads of httpx
clients. Printed per scenario: requests/s, p50/p95 latency, error rate, server RSS growth. Goals:

  1. 0 errors at 32 concurrent clients for --seconds (default 60);
  2. throughput with dynamic batching >= 3x one-at-a-time (max_batch_size 1) at 16 clients;
  3. server overhead <= 10% of raw `generate` time (same model, adapter, prompt, tokens) at 1 client.

On a small machine the clients share the CPU with the server: requests/s is a lower bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

BAD_BASE64 = "data:image/png;base64,!!@@"
PROMPT = "Describe the shape in the picture in a few words."


def register_version(uri: str, root: Path, seed: int, name: str = "bench") -> str:
    """Another adapter (different random LoRA weights) as a new version of ``name``: the promote target."""
    import torch
    from peft import get_peft_model

    from tuneline.config.schema import ModelConfig, TrainConfig
    from tuneline.models.load import load_model, load_processor, resolve_base
    from tuneline.registry import store
    from tuneline.training.adapters import lora_config

    client = store.client(uri)
    resolved = resolve_base(ModelConfig(base="tiny:gemma3"))
    torch.manual_seed(seed)
    model = get_peft_model(load_model(resolved), lora_config(TrainConfig(), resolved.family))
    folder = root / f"adapter-{seed}"
    model.save_pretrained(folder)
    load_processor(resolved).inner.save_pretrained(folder)
    exp = client.get_experiment_by_name("bench").experiment_id
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(folder), "adapter")
    mv = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/adapter", run_id=run.info.run_id,
        tags={"tuneline.base_model": "tiny:gemma3"},
    )  # fmt: skip
    return str(mv.version)


def register_tiny(root: Path) -> tuple[str, Path]:
    import torch
    from peft import get_peft_model

    from tuneline.config.schema import ModelConfig, TrainConfig
    from tuneline.models.load import load_model, load_processor, resolve_base
    from tuneline.registry import store
    from tuneline.training.adapters import lora_config

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = store.client(uri)
    exp = client.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
    resolved = resolve_base(ModelConfig(base="tiny:gemma3"))
    torch.manual_seed(0)
    model = get_peft_model(load_model(resolved), lora_config(TrainConfig(), resolved.family))
    folder = root / "adapter"
    model.save_pretrained(folder)
    load_processor(resolved).inner.save_pretrained(folder)
    run = client.create_run(exp)
    client.log_artifacts(run.info.run_id, str(folder), "adapter")
    client.create_registered_model("bench")
    mv = client.create_model_version(
        "bench", source=f"{run.info.artifact_uri}/adapter", run_id=run.info.run_id,
        tags={"tuneline.base_model": "tiny:gemma3"},
    )  # fmt: skip
    client.set_registered_model_alias("bench", "champion", mv.version)
    return uri, folder


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, root: Path, uri: str, name: str, batch: int, watch_s: float = 10.0) -> None:
        self.port = free_port()
        cfg = root / f"{name}.yaml"
        cfg.write_text(
            f"model: {{base: 'tiny:gemma3'}}\ndata: {{sources: [{{type: jsonl, path: x.jsonl}}]}}\n"
            f"registry: {{tracking_uri: '{uri}', model_name: bench}}\n"
            f"serve: {{state_dir: '{root / name}', port: {self.port}, cache: {{enabled: false}}, "
            f"drift: {{enabled: false}}, batching: {{max_batch_size: {batch}, max_wait_ms: 5}}, "
            f"limits: {{max_concurrency: 256}}, watch: {{interval_s: {watch_s}}}}}\n"
        )
        env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tuneline", "serve", str(cfg)], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(url: str, clients: int, seconds: float, max_tokens: int) -> dict:
    lat: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    body = {
        "model": "bench", "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens, "temperature": 0,
    }  # fmt: skip

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    n = len(lat) + errors[0]
    lat.sort()
    return {
        "rps": len(lat) / wall,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p95": lat[int(0.95 * (len(lat) - 1))] if lat else float("nan"),
        "errors": errors[0],
        "error_rate": errors[0] / max(n, 1),
        "n": n,
    }


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid PNG header claiming width x height pixels over a few bytes of data (a decompression bomb:
    decoding it would need ~2.7 GB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (1 + 3 * width) * 8, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def hostile_bodies() -> list[tuple[str, bytes]]:
    """(kind, raw JSON body): what a hostile client sends. Each must get a 4xx and cost little."""
    import base64
    import json

    def chat(content) -> bytes:
        return json.dumps({"model": "bench", "messages": [{"role": "user", "content": content}]}).encode()

    bomb = "data:image/png;base64," + base64.b64encode(png_bomb()).decode()
    return [
        ("15 MB text prompt", chat("lorem ipsum " * 1_250_000)),
        ("30000x30000 PNG bomb", chat([{"type": "image_url", "image_url": {"url": bomb}}])),
        (
            "bad base64 image",
            chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!@@"}}]),
        ),
        ("invalid JSON", b'{"model": "bench", "messages": [{"role": '),
    ]


def fault_scenario(
    url: str,
    uri: str,
    versions: tuple[str, str],
    clients: int,
    seconds: float,
    max_tokens: int,
    hostile_per_s: float = 1.0,
) -> dict:
    """``clients`` normal clients for ``seconds``; champion promoted to versions[1] at 1/3 and rolled back
    to versions[0] at 2/3 of the run; ``hostile_per_s`` hostile bodies a second from one more client.
    Returns normal latencies, statuses (normal and hostile), the version timeline and the alias moves."""
    from tuneline.registry import store

    normal_lat: list[float] = []
    normal_status: dict[str, int] = {}
    hostile_status: dict[str, dict[str, int]] = {}
    served: list[tuple[float, str]] = []  # (seconds since start, X-Tuneline-Version)
    moves: list[tuple[float, str]] = []
    t_start = time.monotonic()
    stop = t_start + seconds
    body = {
        "model": "bench", "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens, "temperature": 0,
    }  # fmt: skip
    lock = threading.Lock()

    def count(table: dict, key: str) -> None:
        with lock:
            table[key] = table.get(key, 0) + 1

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    count(normal_status, type(exc).__name__)
                    continue
                count(normal_status, str(r.status_code))
                if r.status_code == 200:
                    with lock:
                        normal_lat.append(time.perf_counter() - t0)
                        served.append((time.monotonic() - t_start, r.headers.get("x-tuneline-version", "?")))

    def hostile() -> None:
        bodies = hostile_bodies()
        i = 0
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.monotonic() < stop:
                due = t_start + i / hostile_per_s
                time.sleep(max(0.0, due - time.monotonic()))
                kind, raw = bodies[i % len(bodies)]
                i += 1
                try:
                    r = c.post(
                        "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"}
                    )
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                count(hostile_status.setdefault(kind, {}), status)

    def operator() -> None:
        client = store.client(uri)
        for at, version, what in (
            (seconds / 3, versions[1], "promote"),
            (2 * seconds / 3, versions[0], "rollback"),
        ):
            time.sleep(max(0.0, t_start + at - time.monotonic()))
            client.set_registered_model_alias("bench", "champion", version)
            moves.append((time.monotonic() - t_start, f"{what}: champion -> v{version}"))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    if hostile_per_s > 0:
        threads += [threading.Thread(target=hostile), threading.Thread(target=operator)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"lat": normal_lat, "normal": normal_status, "hostile": hostile_status,
            "served": sorted(served), "moves": moves, "seconds": seconds}  # fmt: skip


def timeline(served: list[tuple[float, str]]) -> list[tuple[float, float, str, int]]:
    """Runs of answers from one version, in completion order: (first s, last s, version, answers)."""
    runs: list[list] = []
    for t, v in served:
        if runs and runs[-1][2] == v:
            runs[-1][1] = t
            runs[-1][3] += 1
        else:
            runs.append([t, t, v, 1])
    return [tuple(r) for r in runs]


def quantiles(lat: list[float]) -> tuple[float, float]:
    lat = sorted(lat)
    if not lat:
        return float("nan"), float("nan")
    return statistics.median(lat), lat[int(0.95 * (len(lat) - 1))]


def print_fault(clean: dict, fault: dict, clients: int) -> None:
    def fives(table: dict) -> int:
        return sum(n for k, n in table.items() if k.startswith("5"))

    c50, c95 = quantiles(clean["lat"])
    f50, f95 = quantiles(fault["lat"])
    print(f"\nfault scenario: {clients} clients, {fault['seconds']:.0f} s, promote at 1/3, rollback at 2/3, "
          "1 hostile body/s (same server, clean run first)\n")  # fmt: skip
    print("| run | normal requests | normal statuses | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    for name, r, p50, p95 in (("clean", clean, c50, c95), ("faults + hostile", fault, f50, f95)):
        statuses = ", ".join(f"{k}: {n}" for k, n in sorted(r["normal"].items()))
        print(f"| {name} | {sum(r['normal'].values())} | {statuses} | {p50 * 1000:.1f} | {p95 * 1000:.1f} |")
    print("\n| hostile body | sent | statuses |")
    print("|---|---|---|")
    for kind, table in fault["hostile"].items():
        statuses = ", ".join(f"{k}: {n}" for k, n in sorted(table.items()))
        print(f"| {kind} | {sum(table.values())} | {statuses} |")
    print("\nversion timeline (answers in completion order; alias moves at the times shown):")
    for t, what in fault["moves"]:
        print(f"  {t:6.1f} s  {what}")
    for first, last, version, n in timeline(fault["served"]):
        print(f"  {first:6.1f} - {last:6.1f} s  v{version}: {n} answers")
    hostile_5xx = sum(fives(t) for t in fault["hostile"].values())
    n5 = fives(fault["normal"]) + fives(clean["normal"]) + hostile_5xx
    ratio = f95 / c95
    print("\n| goal | measured | holds |")
    print("|---|---|---|")
    print(f"| 0 5xx (normal and hostile) | {n5} | {n5 == 0} |")
    measured = f"{ratio:.2f}x ({f95 * 1000:.0f} / {c95 * 1000:.0f} ms)"
    print(f"| p95 of normal requests within 1.5x of clean | {measured} | {ratio <= 1.5} |")


def raw_generator(folder: Path, max_tokens: int):
    """The same request as a bare generate call (model + adapter in this process): returns a function
    that runs it once and returns (seconds, new tokens)."""
    import torch
    from peft import PeftModel

    from tuneline.config.schema import ModelConfig
    from tuneline.models.load import load_model, load_processor, resolve_base

    torch.set_num_threads(1)
    resolved = resolve_base(ModelConfig(base="tiny:gemma3"))
    model = PeftModel.from_pretrained(load_model(resolved), str(folder)).eval()
    proc = load_processor(resolved)
    text = proc.render(
        [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}], add_generation_prompt=True
    )
    batch = proc.encode([text], padding_side="left")

    def once() -> tuple[float, int]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **batch, max_new_tokens=max_tokens, do_sample=False,
                eos_token_id=proc.stop_token_ids, pad_token_id=proc.pad_token_id,
            )  # fmt: skip
        return time.perf_counter() - t0, out.shape[1] - batch["input_ids"].shape[1]

    return once


def one_client_vs_raw(url: str, raw, max_tokens: int, pairs: int) -> tuple[float, float, int]:
    """Alternate one HTTP request and one raw generate, so both see the same machine load (this box is
    shared); medians of each. The client is the standard library's keep-alive ``http.client``: on this
    machine the client shares the server's core, and httpx's own ~0.5-1 ms of Python per request would
    be counted as server overhead."""
    import http.client
    import json
    from urllib.parse import urlparse

    body = json.dumps(
        {
            "model": "bench",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }  # fmt: skip
    ).encode()
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    http_s, bare, n_new = [], [], 0
    try:
        for _ in range(pairs):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body, headers)
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, data
            http_s.append(time.perf_counter() - t0)
            secs, n_new = raw()
            bare.append(secs)
    finally:
        conn.close()
    return statistics.median(http_s), statistics.median(bare), n_new


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="Duration of the 32-client run.")
    ap.add_argument("--batch-seconds", type=float, default=20.0, help="Duration of each 16-client run.")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=100, help="HTTP / raw generate pairs for the overhead goal.")
    ap.add_argument(
        "--fault-seconds",
        type=float,
        default=60.0,
        help="Duration of the fault scenario (and of its clean run on the same server).",
    )
    ap.add_argument(
        "--only",
        choices=["all", "load", "fault"],
        default="all",
        help="Run only the load goals or only the fault scenario (development).",
    )
    args = ap.parse_args()
    os.environ.setdefault("TUNELINE_CACHE_DIR", tempfile.mkdtemp(prefix="tuneline-bench-cache-"))
    root = Path(tempfile.mkdtemp(prefix="tuneline-bench-serve-"))
    uri, folder = register_tiny(root)
    if args.only in ("all", "fault"):
        run_fault(root, uri, args)
    if args.only in ("all", "load"):
        run_load(root, uri, folder, args)


def run_fault(root: Path, uri: str, args) -> None:
    from tuneline.registry import store

    v1 = store.client(uri).get_model_version_by_alias("bench", "champion").version
    v2 = register_version(uri, root, seed=1)
    server = Server(root, uri, "fault", batch=16, watch_s=0.5)
    try:
        load(server.url, 4, 3, args.max_tokens)  # warm up
        clean = fault_scenario(server.url, uri, (v1, v2), 32, args.fault_seconds, args.max_tokens, 0)
        fault = fault_scenario(server.url, uri, (v1, v2), 32, args.fault_seconds, args.max_tokens, 1.0)
    finally:
        server.stop()
    print_fault(clean, fault, 32)


def run_load(root: Path, uri: str, folder: Path, args) -> None:
    rows = []

    batched = Server(root, uri, "batched", batch=16)
    try:
        load(batched.url, 4, 3, args.max_tokens)  # warm up
        rss0 = rss_mb(batched.proc.pid)
        r32 = load(batched.url, 32, args.seconds, args.max_tokens)
        r32["rss"] = rss_mb(batched.proc.pid) - rss0
        rows.append(("32 clients, batching", args.seconds, r32))
        r16b = load(batched.url, 16, args.batch_seconds, args.max_tokens)
        rows.append(("16 clients, batching", args.batch_seconds, r16b))
        r1 = load(batched.url, 1, args.batch_seconds, args.max_tokens)
        rows.append(("1 client", args.batch_seconds, r1))
        raw = raw_generator(folder, args.max_tokens)
        raw()
        http1, raw1, n_new = one_client_vs_raw(batched.url, raw, args.max_tokens, args.pairs)
    finally:
        batched.stop()
    single = Server(root, uri, "single", batch=1)
    try:
        load(single.url, 4, 3, args.max_tokens)
        r16s = load(single.url, 16, args.batch_seconds, args.max_tokens)
        rows.append(("16 clients, one at a time", args.batch_seconds, r16s))
    finally:
        single.stop()

    print(f"\ntiny:gemma3 + LoRA, {args.max_tokens} max tokens ({n_new} generated), greedy, cache off, CPU\n")
    print("| scenario | seconds | requests | req/s | p50 ms | p95 ms | errors | RSS growth MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, secs, r in rows:
        rss = f"{r['rss']:.1f}" if "rss" in r else "-"
        print(
            f"| {name} | {secs:.0f} | {r['n']} | {r['rps']:.1f} | {r['p50'] * 1000:.1f} "
            f"| {r['p95'] * 1000:.1f} "
            f"| {r['errors']} ({r['error_rate']:.1%}) | {rss} |"
        )
    speedup = r16b["rps"] / r16s["rps"]
    overhead = http1 / raw1 - 1
    print(
        f"| 1 client (http.client), alternating with raw generate ({args.pairs} pairs) | | {args.pairs} | | "
        f"{http1 * 1000:.1f} | | 0 | - |"
    )
    print(f"| raw generate (same request, in process) | | {args.pairs} | | {raw1 * 1000:.1f} | | | |")
    print("\n| goal | measured | holds |")
    print("|---|---|---|")
    print(
        f"| 0 errors at 32 clients for {args.seconds:.0f} s | {r32['errors']} errors | {r32['errors'] == 0} |"
    )
    print(f"| batching >= 3x one-at-a-time at 16 clients | {speedup:.1f}x | {speedup >= 3} |")
    print(f"| server overhead <= 10% of raw generate at 1 client | {overhead:+.1%} | {overhead <= 0.10} |")


if __name__ == "__main__":
    main()
