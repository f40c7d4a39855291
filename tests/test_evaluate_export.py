"""The evaluator and the export CLI on a trained run (`two_class_run`): they reproduce what the training run's
own test stage measured, and refuse inputs that would give wrong numbers."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers.in_process import run_module
from tests.helpers.runs import TINY_TRAIN_OVERRIDES, TWO_CLASS_OVERRIDES, compose_evaluate, data_overrides
from tests.helpers.shard_damage import flip_header_bit
from vlmchallenge.utils.input_errors import InputError
from vlmchallenge.workflows import evaluate

DATA = data_overrides(TINY_TRAIN_OVERRIDES + TWO_CLASS_OVERRIDES)


def read_rows(path):
    return list(csv.DictReader(path.read_text().splitlines()))


def evaluate_cfg(run, out, *overrides):
    return compose_evaluate(
        out, [*DATA, f"paths.data_dir={run.data_dir}", "dataloader.num_workers=0", *overrides]
    )


def best_checkpoint(run):
    return run.objects.components.trainer.checkpoint_callback.best_model_path


def checkpoint_alone(run, tmp_path) -> Path:
    """The run's best checkpoint copied into an empty folder: no Hydra run dir, no config beside it."""
    alone = tmp_path / "alone"
    alone.mkdir()
    return Path(shutil.copy(best_checkpoint(run), alone / "model.ckpt"))


def test_evaluating_the_export_reproduces_the_training_test_stage(two_class_run, tmp_path):
    report = evaluate(evaluate_cfg(two_class_run, tmp_path, f"export_dir={two_class_run.objects.export_dir}"))
    metrics = two_class_run.metrics
    assert report["clips"] == len(two_class_run.objects.components.module.test_predictions)
    assert report["clip_metrics"]["acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert report["openpack_official"]["f1_macro"] == pytest.approx(
        metrics["test/openpack_f1_macro"], abs=1e-9
    )


def test_a_checkpoint_alone_evaluates_like_its_export_and_takes_overrides(two_class_run, tmp_path):
    ckpt = checkpoint_alone(two_class_run, tmp_path)
    by_ckpt = evaluate(evaluate_cfg(two_class_run, tmp_path / "c", f"ckpt={ckpt}"), overrides=[])
    by_export = evaluate(
        evaluate_cfg(two_class_run, tmp_path / "e", f"export_dir={two_class_run.objects.export_dir}")
    )
    assert by_ckpt["clip_metrics"] == pytest.approx(by_export["clip_metrics"], abs=1e-5)
    rows = [read_rows(tmp_path / d / "predictions.csv") for d in ("c", "e")]
    assert [r["pred_id"] for r in rows[0]] == [r["pred_id"] for r in rows[1]]
    # the checkpoint's own data settings, with a command-line override on top: windows every 2 s, not 1 s
    sparser = evaluate(
        evaluate_cfg(two_class_run, tmp_path / "s", f"ckpt={ckpt}"), overrides=["data.clips.stride_s=2.0"]
    )
    assert sparser["clips"] < by_ckpt["clips"]


def test_generate_mode_counts_invalid_answers(two_class_run, tmp_path):
    export = two_class_run.objects.export_dir
    report = evaluate(evaluate_cfg(two_class_run, tmp_path, f"export_dir={export}", "mode=generate"))
    rows = read_rows(tmp_path / "predictions.csv")
    assert report["mode"] == "generate" and "map" not in report["clip_metrics"]
    assert report["invalid_generations"] == sum(r["pred_id"] == "" for r in rows)
    valid = [r for r in rows if r["pred_id"]]
    assert report["clip_metrics"]["acc"] == pytest.approx(
        sum(r["pred_id"] == r["target_id"] for r in rows) / len(rows), abs=1e-6
    )
    assert all(r["pred"] == r["generated"].strip() for r in valid)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.sampler.num_frames=8"], "trained with sampler settings"),
        (["ckpt=x.ckpt", "export_dir=y"], "exactly one of ckpt"),
        ([], "exactly one of ckpt"),
    ],
)
def test_evaluate_refuses_ambiguous_or_mismatched_inputs(two_class_run, tmp_path, overrides, message):
    if overrides and overrides[0].startswith("data."):
        overrides = [*overrides, f"export_dir={two_class_run.objects.export_dir}"]
    with pytest.raises(ValueError, match=message):
        evaluate(evaluate_cfg(two_class_run, tmp_path, *overrides))


def test_export_cli_gives_the_checkpoints_predictions(two_class_run, tmp_path):
    """`python -m vlmchallenge.export ckpt=...` on a checkpoint alone writes a model that scores the test clips
    as the checkpoint did."""
    from transformers import AutoModelForImageTextToText

    ckpt = checkpoint_alone(two_class_run, tmp_path)
    out = tmp_path / "exported"
    proc = run_module("vlmchallenge.export", f"ckpt={ckpt}", f"out_dir={out}", f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.output[-3000:]
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    exported = AutoModelForImageTextToText.from_pretrained(out).eval()
    module, dm = two_class_run.objects.components.module, two_class_run.objects.components.datamodule
    module.model.eval()
    batch = next(iter(dm.test_dataloader()))
    expected = torch.tensor([p.probs for p in module.test_predictions[: len(batch["class_index"])]])
    got = module.scorer.score(exported, batch).softmax(1)
    assert torch.allclose(got, expected, atol=1e-5)


def test_export_reads_no_data(two_class_run, tmp_path):
    """The export stage builds no datamodule and needs no data folder: its settings carry none."""
    from vlmchallenge.assembly import assemble, settings_from_checkpoint

    settings = settings_from_checkpoint(checkpoint_alone(two_class_run, tmp_path), data_dir=None)
    assert assemble(settings, "export").datamodule is None
    with pytest.raises(ValueError, match="the evaluate stage reads data: its settings need a data_dir"):
        assemble(settings, "evaluate")


@pytest.mark.drill
@pytest.mark.parametrize("sample_start", [False, True], ids=["mid_sample", "sample_start"])
def test_evaluate_names_a_damaged_test_shard_and_the_remedy(two_class_run, tmp_path, drill, sample_start):
    """A header bit flipped in a test shard (same size, so `prepare`'s marker check passes it): evaluation stops
    with an `InputError` naming the shard and how to rebuild it, and writes no report. The entry points print an
    `InputError` as its message alone, exit status 1 (the CLI drill in tests/test_model_availability.py).
    Flipped in a sample's first member, every sample read is whole and the shard just ends early: only the
    count against the index's `nsamples` finds it."""
    shards = tmp_path / "shards"
    shutil.copytree(two_class_run.objects.components.datamodule.out_dir, shards)
    victim = sorted((shards / "test").glob("*.tar"))[0]
    flip_header_bit(victim, sample_start)
    out = tmp_path / "eval"
    cfg = evaluate_cfg(
        two_class_run, out, f"export_dir={two_class_run.objects.export_dir}", f"data.shards.out_dir={shards}"
    )
    with pytest.raises(InputError) as err:
        evaluate(cfg)
    where = "in a sample's first member" if sample_start else "mid-sample"
    drill.record(
        fault=f"a header bit flipped in a test shard ({where}), then evaluation",
        injected=1,
        lost=len(list(out.rglob("report.json"))),  # a report here would score partial data as if whole
        unit="reports on partial data",
        check="report files written; it must stop with the shard's path and the remedy (an InputError)",
    )
    assert f"{victim}: unreadable evaluation shard" in str(err.value)
    assert "python -m vlmchallenge.prepare" in str(err.value)
    if sample_start:
        assert "samples readable, its index lists" in str(err.value)
    assert not list(out.rglob("report.json"))
