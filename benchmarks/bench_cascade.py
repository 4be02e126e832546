"""Hybrid serving on digits: small-only vs fallback-only vs the cascade at the calibrated threshold.

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_cascade.py [--n 1797] [--steps 300]

1. ``tuneline data synth digits`` (scikit-learn's real 8x8 scans, all 1,797 by default; split 60/20/20,
   so val and test hold ~360 records each); two sizes of the same family (``tiny:gemma3@s`` and
   ``@big``, 0.08M vs 31M language-model parameters: a fallback whose compute outweighs the fixed
   per-request work, several times the small one's measured cost) tuned by ``tuneline run`` on the same
   records and split, both registered as versions of ``digits`` with the aliases ``small`` and ``large``.
2. The large one is served by its own ``tuneline serve`` process on loopback: the OpenAI-compatible
   fallback. Its price per 1,000 tokens is what it costs here: its own busy-time cost
   (``tuneline:cost_total``, at ``--price-per-hour``) per token over a warm-up on val records.
3. ``tuneline serve calibrate``'s stage scores val with both (the small model with evaluation's label
   scorer, the fallback through its API), fits a temperature, and picks the cheapest threshold whose
   val accuracy is within ``--margin`` of the fallback's.
4. A second ``tuneline serve`` process runs the cascade (``threshold: auto``). On the test split, through
   HTTP: small-only (``digits@small``, pinned: no cascade), fallback-only (the large server directly) and
   the cascade (``digits``); accuracy, cost per 1,000 requests, p50/p95 latency and the share routed,
   and a paired bootstrap CI (tuneline.stats) of the cascade's accuracy minus the fallback's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

RUN = """
run: {{name: {name}, seed: 0, output_dir: "{work}/runs"}}
model: {{base: "{base}"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified, train: 0.6, val: 0.2, test: 0.2}}
  max_seq_length: 64
train:
  lora: {{r: 16, alpha: 32}}
  train_projector: true
  learning_rate: 2.0e-3
  batch_size: 16
  max_steps: {steps}
  logging_steps: 50
  save_steps: 100000
eval: {{task: classification, max_new_tokens: 3, batch_size: 64, compare_base: false, max_samples: 100,
  gate: {{enabled: false}}}}
registry: {{tracking_uri: "sqlite:///{work}/mlflow.db", model_name: digits}}
serve:
  port: {port}
  state_dir: "{work}/serve-{name}"
  traffic: {{{alias}: 100}}
  drift: {{enabled: false}}
  cache: {{enabled: false}}
  watch: {{interval_s: 0}}
  batching: {{max_batch_size: 1}}
  costs: {{price_per_hour: {price}, input_per_1k: {token_price}, output_per_1k: {token_price}}}
{cascade}
"""

CASCADE = """  cascade:
    small: digits@small
    fallback: {{url: "http://127.0.0.1:{fallback_port}/v1", model: "digits@large"}}
    threshold: auto
    target: {{min: {target}}}
    calibration: temperature
    labels: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    timeout_s: 10
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tuneline(*args: str, env=None) -> None:
    subprocess.run([sys.executable, "-m", "tuneline", *args], check=True, env=env)


def write(path: Path, **kw) -> Path:
    path.write_text(RUN.format(**kw))
    return path


def serve(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuneline", "serve", str(config)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def metric(url: str, name: str, **labels) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        head, _, value = line.rpartition(" ")
        if line.startswith("#") or not (head == name or head.startswith(name + "{")):
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def request(record, model: str) -> dict:
    img = Path(record.images[0]).read_bytes()
    uri = "data:image/png;base64," + base64.b64encode(img).decode()
    question = next(p["text"] for p in record.messages[0]["content"] if p.get("type") == "text")
    content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": question}]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 3,
        "temperature": 0,
    }


def measure(client: httpx.Client, url: str, records, model: str) -> dict:
    from tuneline.evaluation.scoring import normalise

    latency, correct, costs, routed, tokens = [], [], [], [], []
    for r in records:
        began = time.perf_counter()
        resp = client.post(f"{url}/v1/chat/completions", json=request(r, model))
        latency.append(time.perf_counter() - began)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        correct.append(normalise(body["choices"][0]["message"]["content"]) == normalise(r.target))
        tokens.append(body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"])
        if "x-tuneline-cost" in resp.headers:
            costs.append(float(resp.headers["x-tuneline-cost"]))
            routed.append(resp.headers["x-tuneline-route"] == "fallback")
        else:
            costs.append(None)
    return {
        "latency": np.array(latency),
        "correct": np.array(correct, dtype=float),
        "cost": costs,
        "routed": routed,
        "tokens": np.array(tokens, dtype=float),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1797, help="digits records (1,797: all of them)")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the small model")
    ap.add_argument("--large-steps", type=int, default=300, help="training steps of the fallback")
    ap.add_argument("--small", default="tiny:gemma3@s")
    ap.add_argument("--large", default="tiny:gemma3@big")
    ap.add_argument("--price-per-hour", type=float, default=2.0, help="accelerator-hour price (both models)")
    ap.add_argument("--margin", type=float, default=0.02, help="target: fallback val accuracy - margin")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-cascade-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()

    # 1. data and the two tuned models
    tuneline("data", "synth", "digits", str(work / "digits"), "--n", str(args.n))
    data = work / "digits" / "data.jsonl"
    p_large, p_cascade = free_port(), free_port()
    common = {"work": work, "data": data, "price": args.price_per_hour}
    configs = {}
    plan = (
        ("small", args.small, p_cascade, args.steps),
        ("large", args.large, p_large, args.large_steps),
    )
    for alias, base, port, steps in plan:
        configs[alias] = write(
            work / f"{alias}.yaml", name=alias, base=base, port=port, alias=alias, token_price=0.0,
            cascade="", steps=steps, **common,
        )  # fmt: skip
        t = time.perf_counter()
        tuneline("run", str(configs[alias]))
        print(f"trained and registered {alias} ({base}, {steps} steps) in {time.perf_counter() - t:.0f} s")
    from tuneline.data.records import read_records
    from tuneline.registry import store

    client = store.client(f"sqlite:///{work}/mlflow.db")
    versions = sorted(client.search_model_versions("name='digits'"), key=lambda v: int(v.version))
    client.set_registered_model_alias("digits", "small", versions[0].version)
    client.set_registered_model_alias("digits", "large", versions[1].version)
    (run_dir,) = (work / "runs" / "small").iterdir()
    val = list(read_records(run_dir / "data" / "val.jsonl"))
    test = list(read_records(run_dir / "data" / "test.jsonl"))

    # 2. the fallback server, priced by its own busy time per token
    large_url = f"http://127.0.0.1:{p_large}"
    large = serve(configs["large"], work / "serve-large.log")
    procs = [large]
    try:
        wait_ready(large_url, large)
        with httpx.Client(timeout=60) as http:
            for r in val[:20]:
                http.post(
                    f"{large_url}/v1/chat/completions", json=request(r, "digits@large")
                ).raise_for_status()
        cost = metric(large_url, "tuneline:cost_total", variant="large")
        tokens = metric(large_url, "tuneline:prompt_tokens_total") + metric(
            large_url, "tuneline:generation_tokens_total"
        )
        token_price = cost / tokens * 1000
        print(
            f"fallback price: {token_price:.3g} per 1,000 tokens "
            f"(its busy-time cost at {args.price_per_hour}/h)"
        )

        # 3. calibrate on val: score once, target = fallback accuracy - margin
        from tuneline.config import load_config
        from tuneline.stages import calibrate

        cascade_cfg = work / "cascade.yaml"
        write(
            cascade_cfg, name="small", base=args.small, port=p_cascade, alias="small",
            token_price=token_price, cascade=CASCADE.format(fallback_port=p_large, target=0.5),
            steps=args.steps, **common,
        )  # fmt: skip
        cfg = load_config(cascade_cfg, [])
        labels = list(cfg.serve.cascade.labels)
        y = calibrate._targets(val, labels)
        t = time.perf_counter()
        small_val = calibrate._score_local(cfg, "digits@small", val, labels, y, cfg.registry.tracking_uri)
        fallback_val = calibrate._score_remote(cfg, cfg.serve.cascade.fallback, val, labels)
        target = round(max(float(fallback_val.correct.mean()) - args.margin, 0.0), 4)
        write(
            cascade_cfg, name="small", base=args.small, port=p_cascade, alias="small",
            token_price=token_price, cascade=CASCADE.format(fallback_port=p_large, target=target),
            steps=args.steps, **common,
        )  # fmt: skip
        cfg = load_config(cascade_cfg, [])
        cal = calibrate.choose_and_write(cfg, small_val, fallback_val, labels, y)
        print(
            f"calibrated on {cal['n']} val records in {time.perf_counter() - t:.0f} s: "
            f"target accuracy >= {target} -> threshold {cal['threshold']:.4f} (met: {cal['met']}), "
            f"temperature {cal['temperature']:.2f}, "
            f"ECE {cal['ece_before']:.3f} -> {cal['ece_after']:.3f}"
        )

        # 4. the cascade server; the three ways of answering on the test split, through HTTP
        cascade_url = f"http://127.0.0.1:{p_cascade}"
        cascade = serve(cascade_cfg, work / "serve-cascade.log")
        procs.append(cascade)
        wait_ready(cascade_url, cascade)
        with httpx.Client(timeout=60) as http:
            for r in val[:5]:  # warm-up
                http.post(f"{cascade_url}/v1/chat/completions", json=request(r, "digits@small"))
                http.post(f"{cascade_url}/v1/chat/completions", json=request(r, "digits"))
            before = metric(cascade_url, "tuneline:cost_total", variant="small")
            small = measure(http, cascade_url, test, "digits@small")
            small_cost = (metric(cascade_url, "tuneline:cost_total", variant="small") - before) / len(test)
            fb = measure(http, large_url, test, "digits@large")
            cas = measure(http, cascade_url, test, "digits")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    fb_cost = float(np.mean(fb["tokens"])) * token_price / 1000  # what the cascade pays it per request
    cas_cost = float(np.mean(cas["cost"]))
    rows = [
        ("small only (digits@small)", small, small_cost, 0.0),
        ("fallback only (large server)", fb, fb_cost, 1.0),
        (f"cascade @ {cal['threshold']:.3f}", cas, cas_cost, float(np.mean(cas["routed"]))),
    ]
    from tuneline.stats import paired_bootstrap

    diff = paired_bootstrap(
        lambda _y, c: float(np.mean(c)), np.ones(len(test)), fb["correct"], cas["correct"], n_resamples=2000
    )
    print(
        f"\ndigits test split: {len(test)} records ({len(val)} val), {args.small} ({args.steps} steps) vs "
        f"{args.large} ({args.large_steps} steps); "
        f"prices: {args.price_per_hour}/accelerator-hour, fallback {token_price:.3g}/1k tokens"
    )
    print(f"{'route':<30} {'accuracy':>8} {'cost/1,000':>11} {'to fallback':>11} {'p50 ms':>8} {'p95 ms':>8}")
    for name, m, cost, share in rows:
        p50, p95 = np.percentile(m["latency"], [50, 95]) * 1000
        acc = m["correct"].mean()
        print(f"{name:<30} {acc:>8.3f} {cost * 1000:>11.4g} {share:>11.1%} {p50:>8.1f} {p95:>8.1f}")
    print(
        f"cascade: accuracy {cas['correct'].mean() - fb['correct'].mean():+.3f} vs fallback-only at "
        f"{cas_cost / fb_cost:.0%} of its cost (val target: accuracy >= {target}); 95% CI of the "
        f"difference [{diff.low:+.3f}, {diff.high:+.3f}]; the fallback costs {fb_cost / small_cost:.1f}x "
        f"the small model per request; total "
        f"{time.perf_counter() - began:.0f} s; work folder {work}"
    )
    json_out = {
        "n_test": len(test),
        "threshold": cal["threshold"],
        "target": target,
        "n_val": len(val),
        "calibration": {k: cal[k] for k in ("threshold", "met", "temperature", "ece_before", "ece_after")},
        "accuracy_diff_vs_fallback": {"delta": diff.delta, "low": diff.low, "high": diff.high},
        "fallback_cost_ratio": fb_cost / small_cost,
        "rows": {
            name: {
                "accuracy": float(m["correct"].mean()),
                "cost_per_1k": cost * 1000,
                "share_fallback": share,
                "p50_ms": float(np.percentile(m["latency"], 50) * 1000),
                "p95_ms": float(np.percentile(m["latency"], 95) * 1000),
            }
            for name, m, cost, share in rows
        },
    }
    (work / "bench_cascade.json").write_text(json.dumps(json_out, indent=2))


if __name__ == "__main__":
    main()
