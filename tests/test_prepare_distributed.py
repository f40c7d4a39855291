"""Preparation split over jobs (`data.shard_of=i/n`, `data.sessions=[...]`) and the merge that publishes them."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import vlmchallenge.conf_schema  # noqa: F401
from tests.helpers.runs import CONF_DIR
from vlmchallenge import data_workflows
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.merge import merge_jobs
from vlmchallenge.data.pipeline import prepare


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def subset(cfg: DataConfig, out_dir: str | Path | None = None, **fields) -> DataConfig:
    shards = dataclasses.replace(cfg.shards, out_dir=str(out_dir)) if out_dir else cfg.shards
    return dataclasses.replace(cfg, shards=shards, **fields)


def index_files(out_dir: Path) -> list[str]:
    return sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.json") if "done" not in p.name)


def test_two_jobs_and_a_merge_equal_one_job(data_cfg, tmp_path, data_dir):
    one_job = prepare(data_cfg, data_dir)
    jobs = subset(data_cfg, tmp_path / "jobs")
    assert subset(jobs, shard_of="1/2", sessions=["U9001/S0100"]).fingerprint() == data_cfg.fingerprint()

    first = prepare(subset(jobs, shard_of="0/2"), data_dir)
    assert [r.key for r in first.sessions] == ["U9001-S0100", "U9003-S0100"]  # every 2nd, from the 1st
    assert first.manifest is None and index_files(first.out_dir) == []  # only shards and done-markers
    assert first.subset == "data.shard_of=0/2 of all: 2 of 3 sessions"
    with pytest.raises(
        RuntimeError,
        match=r"1 of 3 sessions have no done-marker .*: U9002-S0100; run data.sessions=\[U9002/S0100\]",
    ):
        merge_jobs(jobs, data_dir)
    assert index_files(first.out_dir) == []  # a refused merge publishes nothing

    second = prepare(subset(jobs, shard_of="1/2"), data_dir)
    assert [r.key for r in second.sessions] == ["U9002-S0100"]
    merged = merge_jobs(jobs, data_dir)
    reference = tree_bytes(one_job.out_dir)
    assert {"manifest.json", "train/shardindex.json", "val/shardindex.json", "test/shardindex.json"} < set(
        reference
    )
    assert tree_bytes(merged.out_dir) == reference  # every shard, marker, index and the manifest
    assert merged.manifest == one_job.manifest


def test_merge_refuses_markers_of_other_settings_and_missing_shards(data_cfg, data_dir):
    prepare(subset(data_cfg, shard_of="0/1"), data_dir)  # one subset job over every session
    out = Path(data_cfg.shards.out_dir)
    marker = out / "val" / "U9002-S0100.done.json"
    intact = marker.read_text()
    marker.write_text(json.dumps({**json.loads(intact), "config_fingerprint": "0123456789abcdef"}))
    with pytest.raises(ValueError, match=rf"other data settings .*{marker} \(0123456789\)"):
        merge_jobs(data_cfg, data_dir)
    marker.write_text(intact)
    shard = out / "test" / "U9003-S0100-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-512])
    with pytest.raises(FileNotFoundError, match=rf"missing or of another size: {shard};"):
        merge_jobs(data_cfg, data_dir)
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("shard_of", ["2/2", "1", "-1/2", "a/b", "0/0"])
def test_shard_of_must_read_i_of_n(data_cfg, shard_of, data_dir):
    with pytest.raises(
        ValueError, match=rf"data.shard_of: expected 'i/n' with 0 <= i < n .* got '{shard_of}'"
    ):
        prepare(subset(data_cfg, shard_of=shard_of), data_dir)


def test_subset_and_merge_settings_are_checked(data_cfg, data_dir):
    with pytest.raises(
        ValueError, match=r"data.sessions: expected entries like U0201/S0100 .* \['U9001-S0100'\]"
    ):
        prepare(subset(data_cfg, sessions=["U9001-S0100"]), data_dir)
    with pytest.raises(
        ValueError, match=r"data.sessions: U9009/S0100 not among .*; known: U9001/S0100, U9002"
    ):
        prepare(subset(data_cfg, sessions=["U9001/S0100", "U9009/S0100"]), data_dir)
    no_test = dataclasses.replace(data_cfg, splits=dataclasses.replace(data_cfg.splits, test=[]))
    with pytest.raises(ValueError, match=r"U9003/S0100 not among .* \(U9003/S0100: user in no split\)"):
        prepare(subset(no_test, sessions=["U9003/S0100"]), data_dir)
    overwrite = dataclasses.replace(data_cfg.shards, overwrite=True)
    with pytest.raises(
        ValueError, match="deletes the whole output folder, which the other subset jobs share"
    ):
        prepare(dataclasses.replace(data_cfg, shard_of="0/2", shards=overwrite), data_dir)
    with pytest.raises(ValueError, match="would delete the jobs' output"):
        merge_jobs(dataclasses.replace(data_cfg, shards=overwrite), data_dir)
    with pytest.raises(
        ValueError, match="merge=true covers every session: drop data.sessions / data.shard_of"
    ):
        merge_jobs(subset(data_cfg, shard_of="0/2"), data_dir)
    with pytest.raises(ValueError, match="merge=true writes into a local data.shards.out_dir"):
        merge_jobs(subset(data_cfg, "s3://bucket/shards"), data_dir)
    with pytest.raises(FileNotFoundError, match="nothing to merge"):
        merge_jobs(data_cfg, data_dir)


def run_cli(run_dir: Path, overrides: list[str]):
    """`python -m vlmchallenge.prepare <overrides>` in-process: conf/prepare.yaml with Hydra's runtime set."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    try:
        return data_workflows.prepare(cfg), json.loads((run_dir / "prepare_summary.json").read_text())
    finally:
        GlobalHydra.instance().clear()


def test_the_printed_merge_command_merges_the_jobs(synthetic_root, tmp_path, capsys):
    job = [
        f"data.root={synthetic_root}",
        "data.synthetic=null",
        f"paths.data_dir={tmp_path / 'data'}",
        "data.splits.train=[U9001]",
        "data.splits.val=[U9002]",
        "data.splits.test=[U9003]",
        "data.shards.workers=1",
    ]
    result, summary = run_cli(tmp_path / "job1", [*job, "data.shard_of=1/2"])
    printed = capsys.readouterr().out
    assert "subset job: split indexes and manifest NOT written" in printed
    command = summary["merge_command"]
    assert command in printed.replace("\n", "") and summary["mode"] == "subset"
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "vlmchallenge.prepare"] and "merge=true" in argv
    with pytest.raises(RuntimeError, match="no done-marker .*: U9001-S0100, U9003-S0100"):
        run_cli(tmp_path / "early_merge", argv[3:])
    run_cli(tmp_path / "job0", [*job, "data.shard_of=0/2"])
    merged, summary = run_cli(tmp_path / "merge", argv[3:])
    assert merged.out_dir == result.out_dir and summary["mode"] == "merge" and summary["indexes_written"]
    assert [s["nsamples"] for s in merged.manifest["splits"].values()] == [
        summary["splits"][s]["nsamples"] for s in ("train", "val", "test")
    ]
    assert all(n > 0 for n in (summary["splits"][s]["nsamples"] for s in ("train", "val", "test")))


def test_training_refuses_a_subset_job_s_settings(data_cfg, data_dir):
    """A subset job's settings name part of a dataset; a run on them would train on whatever the last merge
    published, so the datamodule refuses them up front."""
    from vlmchallenge.training.config import DataLoaderConfig
    from vlmchallenge.training.datamodule import ShardDataModule

    data_cfg.shard_of = "0/2"
    with pytest.raises(ValueError, match=r"data.sessions / data.shard_of .* merge=true"):
        ShardDataModule(data_cfg, DataLoaderConfig(), data_dir)
