"""data.engine: ray gives the same validation report, split and snapshot as the local engine."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import write_config
from tuneline.config import load_config
from tuneline.data import snapshot
from tuneline.data.validate import validate

CONFIG = """
run: {{name: v, seed: 0}}
model: {{base: "tiny:gemma3"}}
data:
  sources: [{{type: jsonl, path: "{data}"}}]
  split: {{strategy: stratified_group}}
  max_seq_length: 64
  engine: {engine}
  workers: 2
"""


def test_engine_must_be_local_or_ray(workdir, shapes_dir):
    from tuneline.errors import ConfigError

    with pytest.raises(ConfigError, match="data.engine: 'spark' is not allowed; use one of 'local' or 'ray'"):
        load_config(write_config(workdir, CONFIG.format(data=shapes_dir / "data.jsonl", engine="spark")))


@pytest.mark.integration
def test_ray_engine_matches_local_engine(workdir, shapes_dir, tmp_path):
    ray = pytest.importorskip("ray")
    from PIL import Image

    folder = workdir / "data"
    shutil.copytree(shapes_dir, folder)
    images = folder / "images"
    shutil.copyfile(images / "shape-00001.png", images / "copy.png")  # findings to compare, too
    Image.open(images / "shape-00002.png").resize((40, 40)).save(images / "near.png")
    with (folder / "data.jsonl").open("a") as fh:
        for name in ("copy", "near"):
            content = [{"type": "image", "path": f"images/{name}.png"}, {"type": "text", "text": "Colour?"}]
            messages = [{"role": "user", "content": content}, {"role": "assistant", "content": "red"}]
            fh.write(json.dumps({"id": name, "messages": messages}) + "\n")
    cfgs = {
        e: load_config(write_config(workdir, CONFIG.format(data=folder / "data.jsonl", engine=e)))
        for e in ("local", "ray")
    }
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = {e: validate(c) for e, c in cfgs.items()}
    finally:
        ray.shutdown()
    local, remote = results["local"], results["ray"]
    assert remote.report() == local.report()
    assert {s: [r.id for r in v] for s, v in remote.splits.items()} == {
        s: [r.id for r in v] for s, v in local.splits.items()
    }
    assert any(f.check.startswith("duplicate") for f in local.findings)
    snaps = {e: snapshot.build(cfgs[e], r.splits, r.infos, root=tmp_path / e) for e, r in results.items()}
    assert snaps["ray"].fingerprint == snaps["local"].fingerprint
    files = {
        e: sorted(p.relative_to(s.path) for p in s.path.rglob("*") if p.is_file()) for e, s in snaps.items()
    }
    assert files["ray"] == files["local"]
    for rel in files["local"]:
        assert (snaps["ray"].path / rel).read_bytes() == (snaps["local"].path / rel).read_bytes(), rel


def test_ray_engine_without_ray_names_the_extra(monkeypatch):
    import sys

    from tuneline.data.images import ImageLimits
    from tuneline.data.validate import inspect_images_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(RuntimeError, match=r"pip install 'tuneline\[ray\]'"):
        inspect_images_ray(["a.png"], ImageLimits())
