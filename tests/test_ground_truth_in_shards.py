"""`prepare` copies each session's 1-Hz ground truth into the shard folder and lists it in the done-markers and
the manifest, so the official score needs only the shards (local or at a URL), not the raw tree."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import webdataset as wds

from tests.helpers.runs import compose_evaluate
from tests.test_remote_shards import serve_directory
from vlmchallenge.data.annotation_parser import parse_operations_1hz_csv
from vlmchallenge.data.classes import OPENPACK_OPERATIONS
from vlmchallenge.data.config import DataConfig
from vlmchallenge.data.merge import merge_jobs
from vlmchallenge.data.pipeline import prepare
from vlmchallenge.evaluation.clip_prediction import ClipPrediction
from vlmchallenge.evaluation.ground_truth import load_ground_truth_1hz
from vlmchallenge.evaluation.report import build_report, session_seconds
from vlmchallenge.training.datamodule import read_split_index
from vlmchallenge.utils.atomic import is_temp_file
from vlmchallenge.workflows import evaluate

OPERATION_NAMES = [c.name for c in OPENPACK_OPERATIONS if not c.is_ignore]
SESSIONS = {"train": "U9001-S0100", "val": "U9002-S0100", "test": "U9003-S0100"}


@pytest.fixture
def own_tree(data_cfg, synthetic_root, tmp_path) -> DataConfig:
    """The conftest's settings over this test's own copy of the synthetic tree, which the test may delete."""
    root = shutil.copytree(synthetic_root, tmp_path / "raw")
    return dataclasses.replace(data_cfg, root=str(root))


def raw_1hz(root: str | Path, key: str) -> Path:
    user, session = key.split("-")
    return Path(root) / user / "annotation" / "openpack-operations-1hz" / f"{session}.csv"


def predictions_from_shards(out_dir: Path) -> list[ClipPrediction]:
    """One prediction per prepared clip of every split: its label, except every third clip's, which is
    shifted to the next operation (so the score is neither 0 nor 1 and depends on the truth's every second)."""
    predictions = []
    for split in SESSIONS:
        urls, _ = read_split_index(out_dir, split)
        for sample in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.decode()):
            meta, target = sample["json"], int(sample["cls"])
            pred = (target + 1) % len(OPERATION_NAMES) if meta["clip"] % 3 == 0 else target
            one_hot = tuple(float(i == pred) for i in range(len(OPERATION_NAMES)))
            predictions.append(ClipPrediction(meta, target, pred, one_hot))
    return predictions


def test_prepare_copies_each_sessions_1hz_ground_truth_and_lists_it(own_tree, data_dir):
    result = prepare(own_tree, data_dir)
    for split, key in SESSIONS.items():
        source = raw_1hz(own_tree.root, key).read_bytes()
        copy = result.out_dir / split / f"{key}.operations-1hz.csv"
        assert copy.read_bytes() == source  # bytes unchanged
        entry = {"file": f"{key}.operations-1hz.csv", "sha256": hashlib.sha256(source).hexdigest()}
        marker = json.loads((result.out_dir / split / f"{key}.done.json").read_text())
        assert marker["ground_truth_1hz"] == entry
        listed = json.loads((result.out_dir / "manifest.json").read_text())["splits"][split]
        assert listed["ground_truth_1hz"] == {key: {**entry, "file": f"{split}/{entry['file']}"}}
    assert not [p for p in result.out_dir.rglob("*") if is_temp_file(p)]


def test_the_official_score_from_the_shards_alone_equals_the_one_from_the_raw_tree(
    own_tree, tmp_path, data_dir
):
    out_dir = prepare(own_tree, data_dir).out_dir
    predictions = predictions_from_shards(out_dir)
    with_raw = build_report(predictions, OPERATION_NAMES, own_tree, tmp_path / "raw_report")
    shutil.rmtree(own_tree.root)

    # what an evaluation run does first (datamodule.prepare_data): the finished folder is used as it is
    reused = prepare(own_tree, data_dir)
    assert reused.out_dir == out_dir and reused.manifest["splits"]["test"]["sessions"] == ["U9003-S0100"]
    alone = build_report(predictions, OPERATION_NAMES, own_tree, tmp_path / "shard_report", shard_dir=out_dir)
    official = alone["openpack_official"]
    assert 0.2 < official["f1_macro"] < 0.95  # some seconds right, some wrong
    assert official == with_raw["openpack_official"]
    assert sorted(official["per_session"]) == sorted(SESSIONS.values())


def test_a_session_prepared_without_1hz_file_is_recorded_null_and_cannot_be_scored(own_tree, data_dir):
    raw_1hz(own_tree.root, "U9003-S0100").unlink()
    out_dir = prepare(own_tree, data_dir).out_dir
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["splits"]["test"]["ground_truth_1hz"] == {"U9003-S0100": None}
    assert json.loads((out_dir / "test" / "U9003-S0100.done.json").read_text())["ground_truth_1hz"] is None
    assert not (out_dir / "test" / "U9003-S0100.operations-1hz.csv").exists()
    test_clips = [p for p in predictions_from_shards(out_dir) if p.meta["user"] == "U9003"]
    with pytest.raises(
        FileNotFoundError, match=rf"U9003-S0100: no 1-Hz ground truth in the shards at {out_dir}"
    ):
        session_seconds(test_clips, [c.id for c in OPENPACK_OPERATIONS], own_tree, out_dir)


def test_an_altered_copy_is_refused_by_its_checksum(own_tree, data_dir):
    out_dir = prepare(own_tree, data_dir).out_dir
    copy = out_dir / "val" / "U9002-S0100.operations-1hz.csv"
    lines = copy.read_text().splitlines(keepends=True)
    copy.write_text("".join(lines[:-1]))  # one second short: still a valid CSV
    with pytest.raises(ValueError, match=rf"{copy}: sha256 \w+ differs from the manifest's"):
        load_ground_truth_1hz(out_dir, "U9002-S0100")


def test_the_ground_truth_is_served_from_a_shard_url(own_tree, tmp_path, data_dir):
    out_dir = prepare(own_tree, data_dir).out_dir
    local = parse_operations_1hz_csv(raw_1hz(own_tree.root, "U9003-S0100"))
    with serve_directory(out_dir, tmp_path / "http.log") as url:
        served = load_ground_truth_1hz(url, "U9003-S0100")
        with pytest.raises(ValueError, match=rf"U9009-S0100: not a session of the shards at {url}"):
            load_ground_truth_1hz(url, "U9009-S0100")
    assert served.path == f"{url}/test/U9003-S0100.operations-1hz.csv"  # errors name the URL
    assert (served.unixtime_ms, served.op_ids) == (local.unixtime_ms, local.op_ids)


def test_merge_refuses_a_ground_truth_copy_that_differs_from_its_marker(own_tree, data_dir):
    prepare(dataclasses.replace(own_tree, shard_of="0/1"), data_dir)  # one subset job over every session
    copy = Path(own_tree.shards.out_dir) / "train" / "U9001-S0100.operations-1hz.csv"
    copy.write_bytes(copy.read_bytes().replace(b",100", b",200", 1))  # same size, another label
    with pytest.raises(FileNotFoundError, match=rf"ground-truth copies, checked by sha256.*: {copy};"):
        merge_jobs(own_tree, data_dir)


def test_evaluating_a_checkpoint_without_the_raw_tree_gives_the_training_runs_score(two_class_run, tmp_path):
    """The whole evaluation (prepare_data, test loop, report) with the run's raw tree moved away; the tree is
    put back afterwards, since the trained-run fixture is shared."""
    root = Path(two_class_run.cfg.data.root)
    ckpt = two_class_run.objects.components.trainer.checkpoint_callback.best_model_path
    cfg = compose_evaluate(
        tmp_path, [f"ckpt={ckpt}", f"paths.data_dir={two_class_run.data_dir}", "dataloader.num_workers=0"]
    )
    away = root.with_name(root.name + ".away")
    root.rename(away)
    try:
        report = evaluate(cfg, overrides=[])
        regenerated = root.exists()  # the synthetic default is generated when missing; here it must not be
    finally:
        shutil.rmtree(root, ignore_errors=True)
        away.rename(root)
    assert not regenerated, f"the evaluation needed the raw tree and generated it again at {root}"
    assert report["openpack_official"]["f1_macro"] == pytest.approx(
        two_class_run.metrics["test/openpack_f1_macro"], abs=1e-9
    )
