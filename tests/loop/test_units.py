"""The loop's pieces without models: strategies, near-duplicate de-dup, leakage, label import, the decision,
the schedule and alert rule, the kept inputs and the A/B log's backward-compatible schema."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tuneline.data.records import Record
from tuneline.errors import DataError
from tuneline.loop import labels as labels_mod
from tuneline.loop import select
from tuneline.loop.collect import Candidate
from tuneline.loop.decide import judge
from tuneline.loop.retrain import leaking


def _image(path: Path, seed: int, size: int = 64) -> str:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(x) for x in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, size - 10, 2)
        d.ellipse(
            [x, y, x + rng.integers(6, 30), y + rng.integers(6, 30)],
            fill=tuple(int(v) for v in rng.integers(0, 255, 3)),
        )
    img.save(path)
    return str(path)


def test_strategies_rank_the_least_confident_first():
    p = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.6, 0.39, 0.01], [0.34, 0.33, 0.33]])
    assert list(np.argsort(-select.uncertainty(p))) == [3, 1, 2, 0]
    assert np.argmax(select.margin(p)) == 3 and np.argmin(select.margin(p)) == 0
    assert np.argmax(select.entropy(p)) == 3
    q = p.copy()
    q[0] = [0.01, 0.98, 0.01]  # the challenger disagrees on row 0 only
    q[2] = [0.5, 0.49, 0.01]  # agrees on row 2, less sure
    dis = select.disagreement(p, q)
    assert dis[0] > 1 > dis[2] > dis[1] == 0
    r1 = select.strategy_scores("random", 10, seed=1)
    assert np.array_equal(r1, select.strategy_scores("random", 10, seed=1))
    with pytest.raises(ValueError, match="unknown strategy"):
        select.strategy_scores("oracle", 3)
    feats = np.array([[0.0, 0.0], [5.0, 5.0]])
    ref = np.random.default_rng(0).normal(size=(100, 2))
    assert select.drift(feats, ref)[1] > select.drift(feats, ref)[0]


def test_rank_skips_near_duplicates_and_training_copies(tmp_path):
    paths = [_image(tmp_path / f"c{i}.png", i) for i in range(4)]
    Image.open(paths[0]).resize((96, 96)).save(tmp_path / "c0-copy.png")  # a near duplicate of c0
    train = [_image(tmp_path / "t0.png", 100)]
    Image.open(paths[2]).save(tmp_path / "t1.png")  # candidate 2 is in the training data
    train.append(str(tmp_path / "t1.png"))
    cands = paths + [str(tmp_path / "c0-copy.png")]
    of_train, pairs = select.near_duplicates(select.image_hashes(cands), select.image_hashes(train))
    assert of_train == {2}
    assert (0, 4) in pairs
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.95])  # the copy of c0 scores highest
    picked = select.rank(scores, 3, exclude=of_train, pairs=pairs)
    assert picked == [4, 3, 1]  # 4 taken, 0 skipped (its duplicate), 2 skipped (in training)


def _rec(rid: str, image: str | None, text: str = "What colour?", label: str | None = "red") -> Record:
    content = ([{"type": "image", "path": image}] if image else []) + [{"type": "text", "text": text}]
    msgs = [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": label}]},
    ]
    return Record(id=rid, messages=msgs, source="x", label=label)


def test_leakage_near_duplicate_of_frozen_test_is_flagged(tmp_path):
    frozen = [_rec(f"t{i}", _image(tmp_path / f"t{i}.png", 10 + i)) for i in range(5)]
    # production: a re-encoded, resized copy of a frozen test image, and an unrelated image
    Image.open(frozen[3].images[0]).resize((80, 80)).convert("RGB").save(tmp_path / "p0.jpg", quality=85)
    new = [_rec("prod-0", str(tmp_path / "p0.jpg")), _rec("prod-1", _image(tmp_path / "p1.png", 99))]
    text_frozen = [_rec("tt", None, "is this spam: win money now")]
    new.append(_rec("prod-2", None, "Is this spam:  WIN money now"))
    assert leaking(new, frozen + text_frozen) == {"prod-0", "prod-2"}


def _pool(tmp_path: Path) -> tuple[dict[str, Candidate], Path]:
    root = tmp_path / "inputs"
    (root / "images").mkdir(parents=True)
    pool = {}
    for i in range(3):
        img = _image(root / "images" / f"{i}.png", i)
        pool[f"chatcmpl-{i}"] = Candidate(
            f"chatcmpl-{i}",
            1.0,
            "champion",
            "1",
            "red",
            f"in{i}",
            [img],
            ["q"],
            probs={"champion": {"red": 0.6, "blue": 0.4}},
        )
    return pool, root


def test_export_writes_label_studio_csv_and_jsonl(tmp_path):
    pool, root = _pool(tmp_path)
    files = labels_mod.export_tasks(tmp_path, list(pool.values()), ["red", "blue"], root)
    tasks = json.loads(files["label_studio"].read_text())
    assert tasks[0]["data"]["image"] == labels_mod.LOCAL_FILES + "images/0.png"
    assert tasks[0]["predictions"][0]["result"][0]["value"] == {"choices": ["red"]}
    assert files["csv"].read_text().splitlines()[0] == ",".join(labels_mod.CSV_FIELDS)
    assert len(files["jsonl"].read_text().splitlines()) == 3
    # the completed tasks (Label Studio export shape) import back
    for t in tasks:
        t["annotations"] = [{"result": [{"type": "choices", "value": {"choices": ["blue"]}}]}]
    done = tmp_path / "export.json"
    done.write_text(json.dumps(tasks, indent=1))
    assert labels_mod.read_labels(done, pool, ["red", "blue"], root) == {k: "blue" for k in pool}


def test_import_of_malformed_label_studio_export_fails_with_file_line_and_imports_nothing(tmp_path):
    pool, root = _pool(tmp_path)
    ok = {
        "data": {"response_id": "chatcmpl-0", "image": labels_mod.LOCAL_FILES + "images/0.png"},
        "annotations": [{"result": [{"type": "choices", "value": {"choices": ["red"]}}]}],
    }
    no_annotation = {"data": {"response_id": "chatcmpl-1"}}
    unknown_label = {
        "data": {"response_id": "chatcmpl-2"},
        "annotations": [{"result": [{"type": "choices", "value": {"choices": ["purple"]}}]}],
    }
    outside = {
        "data": {"response_id": "chatcmpl-0", "image": labels_mod.LOCAL_FILES + "../../etc/passwd"},
        "annotations": [{"result": [{"type": "choices", "value": {"choices": ["red"]}}]}],
    }
    no_id = {"data": {"image": ""}, "annotations": [{"result": [{"value": {"choices": ["red"]}}]}]}
    path = tmp_path / "export.json"
    path.write_text(
        "[\n"
        + ",\n".join(json.dumps(t) for t in (ok, no_annotation, unknown_label, outside, no_id))
        + "\n]\n"
    )
    target = tmp_path / "labels.jsonl"
    with pytest.raises(DataError) as exc:
        labels_mod.merge_labels(target, labels_mod.read_labels(path, pool, ["red", "blue"], root))
    msg = str(exc.value)
    assert f"{path}:3: no annotation" in msg
    assert f"{path}:4: unknown label 'purple'" in msg
    assert f"{path}:5: image path" in msg and "outside the data root" in msg
    assert f"{path}:6: missing field response_id" in msg
    assert f"{path}:2:" not in msg  # the good row is not blamed
    assert "nothing was imported" in msg
    assert not target.exists()


def test_import_csv_and_jsonl_errors_name_lines(tmp_path):
    pool, root = _pool(tmp_path)
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("response_id,label\nchatcmpl-0,red\nchatcmpl-9,red\nchatcmpl-1,\n")
    with pytest.raises(DataError) as exc:
        labels_mod.read_labels(csv_path, pool, ["red", "blue"], root)
    assert f"{csv_path}:3: unknown response id" in str(
        exc.value
    ) and f"{csv_path}:4: missing field label" in str(exc.value)
    jl = tmp_path / "l.jsonl"
    jl.write_text('{"response_id": "chatcmpl-0", "label": "red"}\nnot json\n')
    with pytest.raises(DataError, match=r"l.jsonl:2: not JSON"):
        labels_mod.read_labels(jl, pool, ["red", "blue"], root)
    jl.write_text(
        '{"response_id": "chatcmpl-0", "label": "red"}\n{"response_id": "chatcmpl-1", "label": "blue"}\n'
    )
    assert labels_mod.read_labels(jl, pool, ["red", "blue"], root) == {
        "chatcmpl-0": "red",
        "chatcmpl-1": "blue",
    }


def _report(acc_champ: list[float], acc_chal: list[float], err_chal: float = 0.0):
    """The parts of serving/ab.report's output the decision reads."""

    def entry(acc, err):
        a = np.asarray(acc)
        return {
            "accuracy": {"value": float(a.mean()), "n": len(a)},
            "error_rate": {"value": err},
            "latency_p95_s": {"value": 0.1},
        }

    rep = {"variants": {"champion": entry(acc_champ, 0.0), "challenger": entry(acc_chal, err_chal)}}
    from tuneline.stats import two_sample_bootstrap

    ci = two_sample_bootstrap(np.mean, np.asarray(acc_champ), np.asarray(acc_chal), n_resamples=500, seed=0)
    rep["comparisons"] = {"challenger - champion": {"accuracy": (ci.low, ci.high)}}
    return rep


def test_decision_rule():
    from tuneline.config.schema import LoopDecisionConfig

    rules = LoopDecisionConfig(min_feedback=20, margin=0.05)
    action, why = judge(_report([1.0] * 5, [1.0] * 5), rules)
    assert action == "wait" and "need 20" in why
    rng = np.random.default_rng(0)
    champ = list((rng.random(200) < 0.6).astype(float))
    better = list((rng.random(200) < 0.9).astype(float))
    worse = list((rng.random(200) < 0.2).astype(float))
    assert judge(_report(champ, better), rules)[0] == "promote"
    assert judge(_report(champ, worse), rules)[0] == "rollback"
    assert judge(_report(champ, champ, err_chal=0.2), rules)[0] == "rollback"
    close = list((rng.random(200) < 0.55).astype(float))
    superior = LoopDecisionConfig(min_feedback=20, rule="superior")
    assert judge(_report(champ, close), superior)[0] in ("wait", "rollback")


def _cfg(tmp_path: Path, **launch):
    from tuneline.config.schema import Config

    return Config.model_validate(
        {
            "run": {"name": "shapes"},
            "model": {"base": "tiny:gemma3"},
            "data": {"sources": [{"type": "jsonl", "path": str(tmp_path / "d.jsonl")}]},
            "launch": {"image": "us-docker.pkg.dev/p/r/tuneline:1", **launch},
        }
    )


def test_schedule_cronjob_parses_into_kubernetes_models_and_alert_rule_validates(tmp_path):
    import yaml
    from kubernetes.client import V1CronJob

    from tuneline.loop import schedule

    cfg = _cfg(tmp_path, project="proj", region="us-central1", bucket="gs://b/tuneline")
    doc = schedule.cronjob(cfg, "/cfg/config.yaml", "*/30 * * * *")
    job = V1CronJob.model_validate(doc)
    assert job.spec.schedule == "*/30 * * * *" and job.spec.concurrency_policy == "Forbid"
    assert job.spec.job_template.spec.template.spec.containers[0].command == [
        "tuneline",
        "loop",
        "run",
        "/cfg/config.yaml",
    ]
    bad = json.loads(json.dumps(doc))
    bad["spec"]["schedul"] = bad["spec"].pop("schedule")
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        V1CronJob.model_validate(bad)
    sched = schedule.scheduler_job(cfg, "/cfg/config.yaml")
    from google.cloud import scheduler_v1

    parsed = scheduler_v1.Job.from_json(json.dumps(sched))
    assert parsed.http_target.uri.endswith("/projects/proj/locations/us-central1/jobs")
    import base64

    batch = json.loads(base64.b64decode(sched["httpTarget"]["body"]))
    from google.cloud import batch_v1

    bjob = batch_v1.Job.from_json(json.dumps(batch))
    runnable = bjob.task_groups[0].task_spec.runnables[0].container
    assert runnable.entrypoint == "tuneline" and list(runnable.commands) == [
        "loop",
        "run",
        "/cfg/config.yaml",
    ]
    line = schedule.crontab_line("config.yaml", "0 3 * * *", "/srv/tuneline")
    assert line.startswith("0 3 * * * cd /srv/tuneline && ") and "tuneline loop run config.yaml" in line
    rules = yaml.safe_dump(schedule.alert_rules(cfg))
    assert schedule.validate_rules(rules) in ("promtool", "parsed")
    assert "tuneline:drift_alert" in rules
    with pytest.raises(ValueError):
        schedule.validate_rules(rules.replace("tuneline:drift_alert", "up"))
    out = schedule.render_all(cfg, "config.yaml", tmp_path / "sched")
    assert Path(out["cronjob"]).is_file() and Path(out["alert_rules"]).is_file()


def test_kept_inputs_content_addressed_redacted_and_retained(tmp_path):
    from tuneline.config.schema import ServeConfig, ServeLoopConfig

    assert ServeConfig().loop.keep_inputs is False  # opt-in
    from tuneline.serving.keep import InputKeeper

    k = InputKeeper(tmp_path / "inputs", ServeLoopConfig(keep_inputs=True, retention_days=1))
    img = Image.new("RGB", (20, 20), (200, 10, 10))
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "mail me at ann@example.com"}],
        }
    ]
    a = k.keep(msgs, [img])
    b = k.keep(msgs, [img.copy()])
    k.flush()
    assert a == b  # same content, same address
    body = json.loads((tmp_path / "inputs" / "requests" / f"{a}.json").read_text())
    assert "ann@example.com" not in json.dumps(body) and "[EMAIL]" in body["texts"][0]
    assert len(list((tmp_path / "inputs" / "images").iterdir())) == 1
    import time

    assert k.purge(now=time.time() + 2 * 86400) == 2
    k.close()


def test_old_ab_log_is_migrated_and_feedback_label_kept(tmp_path):
    from tuneline.serving import ab

    db_path = tmp_path / "ab.sqlite"
    with sqlite3.connect(db_path) as db:  # the schema before the loop's columns
        db.executescript(
            "CREATE TABLE responses (id TEXT PRIMARY KEY, ts REAL, variant TEXT, version TEXT, "
            "user_hash TEXT, status INTEGER, latency_s REAL, ttft_s REAL, prompt_tokens INTEGER, "
            "completion_tokens INTEGER, cached INTEGER); "
            "CREATE TABLE feedback (response_id TEXT, ts REAL, outcome TEXT, score REAL);"
        )
        db.execute(
            "INSERT INTO responses (id, ts, variant, version, status) VALUES ('old', 1, 'champion', '1', 200)"
        )
    store = ab.Store(db_path)
    store.record(
        id="new", ts=2.0, variant="champion", version="1", status=200, prediction="red", input_id="abc"
    )
    store.feedback("new", None, None, label="blue")
    store.flush()
    store.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT prediction, input_id FROM responses WHERE id='new'").fetchone() == (
            "red",
            "abc",
        )
        assert db.execute("SELECT prediction FROM responses WHERE id='old'").fetchone() == (None,)
        assert db.execute("SELECT label FROM feedback").fetchone() == ("blue",)
    assert ab.report(db_path)["variants"]["champion"]["requests"] == 2


def test_decision_reads_the_real_ab_report(tmp_path):
    from tuneline.config.schema import LoopDecisionConfig
    from tuneline.serving import ab

    store = ab.Store(tmp_path / "ab.sqlite")
    rng = np.random.default_rng(1)
    for i in range(120):
        variant = "champion" if i % 2 else "challenger"
        p = 0.5 if variant == "champion" else 0.95
        store.record(id=f"r{i}", ts=float(i), variant=variant, version="1" if i % 2 else "2", status=200,
                     latency_s=0.01, cached=0)  # fmt: skip
        store.feedback(f"r{i}", "correct" if rng.random() < p else "incorrect", None)
    store.flush()
    store.close()
    action, why = judge(ab.report(tmp_path / "ab.sqlite", seed=0), LoopDecisionConfig(min_feedback=30))
    assert action == "promote", why
    assert "non-inferior" in why


def test_loop_run_before_any_traffic_waits(tmp_path):
    from tuneline.loop import cycle

    cfg = _cfg(tmp_path)
    serve = cfg.serve.model_copy(update={"state_dir": tmp_path / "serve"})
    cfg = cfg.model_copy(
        update={"serve": serve, "loop": cfg.loop.model_copy(update={"state_dir": tmp_path / "loop"})}
    )
    first, second = cycle.run(cfg), cycle.run(cfg)
    assert str(first) == str(second) and "nothing to do; waiting: no serving log yet" in str(first)


def test_loop_import_command_refuses_a_malformed_export_whole(tmp_path):
    from typer.testing import CliRunner

    from tuneline.cli import app
    from tuneline.loop.collect import write_pool

    (tmp_path / "d.jsonl").write_text("")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"run: {{name: shapes}}\nmodel: {{base: 'tiny:gemma3'}}\n"
        f"data: {{sources: [{{type: jsonl, path: '{tmp_path / 'd.jsonl'}'}}]}}\n"
        "eval: {labels: [red, blue]}\n"
        f"serve: {{state_dir: '{tmp_path / 'serve'}'}}\nloop: {{state_dir: '{tmp_path / 'loop'}'}}\n"
    )
    pool, _ = _pool(tmp_path / "serve")
    round_dir = tmp_path / "loop" / "round-0001"
    round_dir.mkdir(parents=True)
    write_pool(round_dir / "pool.jsonl", list(pool.values()))
    good = {
        "data": {"response_id": "chatcmpl-0"},
        "annotations": [{"result": [{"value": {"choices": ["red"]}}]}],
    }
    bad = {
        "data": {"response_id": "chatcmpl-1"},
        "annotations": [{"result": [{"value": {"choices": ["pink"]}}]}],
    }
    export = tmp_path / "export.json"
    export.write_text(json.dumps([good, bad], indent=1))
    result = CliRunner().invoke(app, ["loop", "import", str(config), str(export)])
    assert result.exit_code == 3, result.output
    assert f"{export}:" in result.output and "unknown label 'pink'" in result.output
    assert not (round_dir / "labels.jsonl").exists()
    export.write_text(json.dumps([good], indent=1))
    result = CliRunner().invoke(app, ["loop", "import", str(config), str(export)])
    assert result.exit_code == 0 and "imported 1 labels" in result.output, result.output
    assert (round_dir / "labels.jsonl").read_text().count("\n") == 1


def test_cluster_diversity_picks_across_clusters_when_the_most_uncertain_are_one_cluster():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10.0
    feats = np.concatenate([centres[k] + rng.normal(0, 0.1, (10, 4)) for k in range(4)])
    scores = np.concatenate(
        [0.9 + 0.01 * rng.random(10), *(0.1 * k + 0.01 * rng.random(10) for k in (3, 2, 1))]
    )
    plain = select.select_batch("margin", scores, 4, features=feats, diversity="none")
    assert {i // 10 for i in plain} == {0}  # best first: four copies of the one uncertain cluster
    picked = select.select_batch("margin", scores, 4, features=feats, diversity="cluster", factor=10)
    assert sorted(i // 10 for i in picked) == [0, 1, 2, 3]  # one of each cluster
    assert all(scores[i] == scores[(i // 10) * 10 : (i // 10) * 10 + 10].max() for i in picked)  # its best
    assert picked == select.select_batch("margin", scores, 4, features=feats, factor=10)  # default cluster
    # exclusion (near duplicates of training images) still holds: the best of cluster 1 is excluded
    best1 = 10 + int(scores[10:20].argmax())
    again = select.select_batch("margin", scores, 4, features=feats, factor=10, exclude={best1})
    assert best1 not in again and sorted(i // 10 for i in again) == [0, 1, 2, 3]
    # no features: plain ranking; drift and random are never clustered
    assert select.select_batch("margin", scores, 4, features=None) == plain
    assert select.select_batch("drift", scores, 4, features=feats) == plain


def test_loop_diversity_config_is_strict():
    from pydantic import ValidationError

    from tuneline.config.schema.loop import LoopConfig

    assert LoopConfig().diversity == "cluster"
    with pytest.raises(ValidationError):
        LoopConfig(diversity="kmeans")


def test_loop_select_command_path_spreads_a_batch_over_text_statistics(tmp_path, monkeypatch):
    from tuneline.loop import cycle
    from tuneline.loop.collect import write_pool

    cfg = _cfg(tmp_path)
    cfg = cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"state_dir": tmp_path / "loop"})})
    monkeypatch.setattr(cycle, "class_labels", lambda cfg: ["a", "b"])
    monkeypatch.setattr(cycle, "_train_images", lambda cfg: [])

    def cand(i: int, text: str, p: float) -> Candidate:
        return Candidate(
            f"r{i}", 1.0, "champion", "1", "a", f"in{i}", [], [text], probs={"champion": {"a": p, "b": 1 - p}}
        )

    short = [cand(i, f"q{i}", 0.5 + 0.001 * i) for i in range(6)]  # the six most uncertain: one kind
    long = [cand(10 + i, " ".join(["word"] * (40 + i)), 0.8 + 0.01 * i) for i in range(6)]
    st = cycle.state_of(cfg)
    st.round_dir.mkdir(parents=True, exist_ok=True)
    write_pool(st.round_dir / "pool.jsonl", short + long)
    picked = lambda: [json.loads(x)["response_id"] for x in open(st.round_dir / "tasks.jsonl")]  # noqa: E731
    cycle.do_select(
        cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"diversity": "none"})}), st, 2, "margin"
    )
    assert picked() == ["r0", "r1"]
    cycle.do_select(cfg, st, 2, "margin")  # default: cluster
    assert picked()[0] == "r0" and picked()[1] == "r10"  # the best of each kind
