"""Shards at a URL: train and test from a real HTTP server on loopback (the stdlib's), read through webdataset's
curl handler and fsspec, with the same metrics as from the local folder; a URL is read-only and checked."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import fsspec
import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.runs import compose_train
from vlmchallenge.data import locations
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.pipeline import prepare
from vlmchallenge.data.shard_writer import INDEX_NAME
from vlmchallenge.training.config import DataLoaderConfig
from vlmchallenge.training.datamodule import ShardDataModule, read_split_index
from vlmchallenge.workflows import train

GET_LINE = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d{3})')


@contextlib.contextmanager
def serve_directory(directory: Path, log_path: Path):
    """`python -m http.server` on 127.0.0.1 and a free port the OS picks (port 0, read back from its banner);
    yields its URL once it answers, kills it on exit. Its request log goes to `log_path`."""
    command = [
        sys.executable,
        "-u",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(directory),
    ]
    with (
        open(log_path, "w") as log,
        subprocess.Popen([*command, "0"], stdout=subprocess.PIPE, stderr=log, text=True) as proc,
    ):
        try:
            banner = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 43521 (http://...) ..."
            match = re.search(r"port (\d+)", banner)
            assert match, f"http.server did not start: {banner!r}"
            url = f"http://127.0.0.1:{match[1]}"
            deadline = time.monotonic() + 10
            while True:
                try:
                    urllib.request.urlopen(url + "/", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield url
        finally:
            proc.kill()


def fetched(log_path: Path) -> dict[str, str]:
    """Path -> HTTP status of every GET in the server's request log."""
    return {path: status for path, status in GET_LINE.findall(log_path.read_text())}


@pytest.fixture
def served(data_cfg, tmp_path, data_dir):
    """Shards prepared locally (the conftest's small settings), served over HTTP."""
    result = prepare(data_cfg, data_dir)
    log = tmp_path / "http.log"
    with serve_directory(result.out_dir, log) as url:
        yield result.out_dir, url, log


def at(cfg: DataConfig, out_dir: str) -> DataConfig:
    moved = copy.deepcopy(cfg)
    moved.shards.out_dir = out_dir
    return moved


def eval_examples(cfg: DataConfig, data_dir: Path, split: str = "test") -> list:
    dm = ShardDataModule(cfg, DataLoaderConfig(batch_size=4, num_workers=0), data_dir, eval_collate=list)
    dm.prepare_data()
    dm.setup("test")
    loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
    return [e for batch in loader for e in batch]


def same_examples(a: list, b: list) -> bool:
    return len(a) == len(b) > 0 and all(
        x.meta == y.meta and x.label == y.label and (x.frames == y.frames).all()
        for x, y in zip(a, b, strict=True)
    )


def test_train_and_test_from_a_url_equal_the_local_folder(tmp_path, shared_data_dir):
    """One short epoch + the test stage, from the local folder and from the same folder served over HTTP."""

    def run(name, *overrides):
        cfg = compose_train(tmp_path / name, shared_data_dir, ["export=false", *overrides], log_dir=tmp_path)
        try:
            result = train(cfg)
        finally:
            GlobalHydra.instance().clear()
        return result, tmp_path / name / "eval"

    local, local_eval = run("local")
    shards = local.components.datamodule.out_dir
    assert isinstance(shards, Path) and (shards / "manifest.json").exists()
    log = tmp_path / "http.log"
    with serve_directory(shards, log) as url:
        remote, remote_eval = run("remote", f"data.shards.out_dir={url}/")
    assert remote.components.datamodule.out_dir == url

    assert {"train/loss", "val/f1_macro", "test/f1_macro", "test/openpack_f1_macro"} <= set(local.metrics)
    assert remote.metrics == local.metrics
    assert json.loads((remote_eval / "report.json").read_text()) == json.loads(
        (local_eval / "report.json").read_text()
    )
    assert (remote_eval / "predictions.csv").read_text() == (local_eval / "predictions.csv").read_text()

    # every byte came over HTTP: the manifest, each split's index, and shards of each split
    got = fetched(log)
    assert got.get("/manifest.json") == "200"
    for split in ("train", "val", "test"):
        assert got.get(f"/{split}/{INDEX_NAME}") == "200", split
        index = json.loads((shards / split / INDEX_NAME).read_text())
        listed = {f"/{split}/{s['url']}" for s in index["shardlist"]}
        tars = {p for p in got if p.startswith(f"/{split}/") and p.endswith(".tar")}
        assert tars and tars <= listed, (split, tars)
        assert all(got[p] == "200" for p in tars)


def test_eval_split_from_http_equals_local(served, data_cfg, data_dir):
    out_dir, url, log = served
    assert same_examples(eval_examples(at(data_cfg, url + "/"), data_dir), eval_examples(data_cfg, data_dir))
    got = fetched(log)
    index = json.loads((out_dir / "test" / INDEX_NAME).read_text())
    assert {f"/test/{s['url']}" for s in index["shardlist"]} <= {p for p, s in got.items() if s == "200"}


def test_a_url_without_a_manifest_is_refused_with_the_upload_step(served, data_cfg, data_dir):
    _, url, _ = served
    dm = ShardDataModule(at(data_cfg, url + "/elsewhere"), DataLoaderConfig(num_workers=0), data_dir)
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert f"{url}/elsewhere/manifest.json" in message and "read-only" in message
    assert (
        f"{data_cfg.name}-{data_cfg.fingerprint()[:10]}" in message
    )  # the local folder to prepare, then upload


def test_a_url_holding_other_settings_is_refused(served, data_cfg, data_dir):
    _, url, _ = served
    other = at(data_cfg, url)
    other.sampler.num_frames = 2
    with pytest.raises(ValueError, match=rf"{re.escape(url)}/manifest.json: shards made with different"):
        prepare(other, data_dir)
    with pytest.raises(ValueError, match="fingerprint"):
        ShardDataModule(other, DataLoaderConfig(num_workers=0), data_dir).prepare_data()


def test_a_url_is_never_written_to(served, data_cfg, data_dir):
    out_dir, url, log = served
    before = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*")}
    result = prepare(at(data_cfg, url), data_dir)  # verifies the upload, writes nothing
    assert result.out_dir == url and result.manifest["config_fingerprint"] == data_cfg.fingerprint()
    assert {p: p.stat().st_mtime_ns for p in out_dir.rglob("*")} == before
    assert not re.search(r'"(PUT|POST)', log.read_text())


def test_any_fsspec_protocol_streams_through_webdataset(data_cfg, data_dir):
    """`memory://` stands in for s3/gs: the same path (fsspec for the JSON, the fsspec gopen handler for the
    shards), without a cloud account."""
    local = prepare(data_cfg, data_dir).out_dir
    memory = fsspec.filesystem("memory")
    root = f"memory://shards-{data_cfg.fingerprint()[:10]}"
    memory.put(str(local), root, recursive=True)
    try:
        assert same_examples(
            eval_examples(at(data_cfg, root), data_dir, "val"), eval_examples(data_cfg, data_dir, "val")
        )
    finally:
        memory.rm(root, recursive=True)


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_s3_without_the_remote_extra_names_it(data_cfg, data_dir):
    with pytest.raises(ImportError, match=r"s3://bucket/shards/manifest.json: .*vlmchallenge\[remote\]"):
        prepare(at(data_cfg, "s3://bucket/shards"), data_dir)
    with pytest.raises(ImportError, match=r"s3://bucket/a.tar: .*vlmchallenge\[remote\]"):
        locations.check_shard_reader("s3://bucket/a.tar")


def test_a_bad_index_or_manifest_names_the_file(served, data_cfg, data_dir):
    out_dir, url, _ = served
    index = out_dir / "test" / INDEX_NAME
    index.write_text(json.dumps({"shardlist": [{"url": 3, "nsamples": 1}]}))
    with pytest.raises(ValueError, match=rf"{re.escape(url)}/test/{INDEX_NAME}: expected a `shardlist`"):
        read_split_index(url, "test")
    index.write_text("{not json")
    with pytest.raises(
        ValueError, match=rf"{re.escape(url)}/test/{INDEX_NAME}: the shard index is not valid"
    ):
        read_split_index(url, "test")
    (out_dir / "manifest.json").write_text("[]")
    with pytest.raises(
        ValueError, match=rf"{re.escape(url)}/manifest.json: the manifest must hold a JSON object"
    ):
        prepare(at(data_cfg, url), data_dir)


def test_location_forms():
    assert locations.resolve("file:///data/shards/x") == Path("/data/shards/x")
    assert locations.resolve("data/shards") == Path("data/shards")
    assert locations.resolve("https://host/a/b/") == "https://host/a/b"
    assert locations.join("s3://bucket/set", "train", "a.tar") == "s3://bucket/set/train/a.tar"
    assert locations.join(Path("/x"), "train") == Path("/x/train")
    assert not locations.is_remote("/abs/path") and not locations.is_remote("file:///x")
    assert locations.is_remote("gs://b/x") and locations.is_remote("http://h/x")
