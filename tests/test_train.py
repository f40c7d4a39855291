"""End-to-end training on the tiny model: artefacts, that it learns, adapter-only checkpoints, exact resume,
determinism, export round trip, 4-bit QLoRA on CPU and its export."""

from __future__ import annotations

import json
import math
import multiprocessing
import os

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.runs import compose_train
from vlmchallenge.models.collator import PromptCollator
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.workflows import train


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def run(tmp_path, shared_data_dir, name, *overrides):
    cfg = compose_train(
        tmp_path / "train" / "runs" / name, shared_data_dir, list(overrides), log_dir=tmp_path
    )
    objects = train(cfg)
    return cfg, objects.metrics, objects


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, shared_data_dir):
    """One run of the default tiny config (tested and exported): (cfg, metrics, objects, its run folder)."""
    root = tmp_path_factory.mktemp("default_run")
    try:
        return (*run(root, shared_data_dir, "run"), root / "train" / "runs" / "run")
    finally:
        GlobalHydra.instance().clear()


def test_train_validate_test_export(default_run):
    cfg, metrics, objects, out = default_run
    assert {"val/f1_macro", "val/acc", "test/f1_macro", "test/acc", "train/loss"} <= set(metrics)
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "csv" / "metrics.csv").exists()
    export = objects.export_dir
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "label_map.json",
        "vlmchallenge.json",
    } <= {p.name for p in export.iterdir()}
    assert (export / "adapter" / "adapter_config.json").exists()
    # a server under another user (the Docker image's) can read every file: safetensors alone writes 0600
    umask = os.umask(0)
    os.umask(umask)
    modes = {
        p.relative_to(export).as_posix(): p.stat().st_mode & 0o777 for p in export.rglob("*") if p.is_file()
    }
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)
    meta = json.loads((export / "vlmchallenge.json").read_text())
    assert meta["sampler"]["num_frames"] == 4 and meta["prompt"]["class_names"][0] == "Picking"
    # the evaluator's report is the test stage's output
    report = json.loads((out / "eval" / "report.json").read_text())
    assert {
        "confusion_matrix.png",
        "per_class_f1.png",
        "timeline.png",
        "predictions.csv",
        "report.md",
        "submission.zip",
    } <= {p.name for p in (out / "eval").iterdir()}
    assert report["clip_metrics"]["f1_macro"] == pytest.approx(metrics["test/f1_macro"], abs=1e-6)
    # the official score, recomputed independently from the submission file and the 1-Hz ground truth
    assert report["openpack_official"]["f1_macro"] == pytest.approx(
        official_f1_from_submission(out / "eval" / "submission.json", cfg.data.root), abs=1e-9
    )


def official_f1_from_submission(path, root) -> float:
    """scikit-learn's macro-F1 over the 10 operations on every non-Null ground-truth second."""
    from sklearn.metrics import f1_score

    from vlmchallenge.data.annotation_parser import parse_operations_1hz_csv
    from vlmchallenge.data.classes import NULL_ID, OPERATION_IDS

    truth, pred = [], []
    for key, sub in json.loads(path.read_text()).items():
        if key == "meta":
            continue
        user, session = key.split("-")
        gt = parse_operations_1hz_csv(f"{root}/{user}/annotation/openpack-operations-1hz/{session}.csv")
        assert sub["unixtime"] == list(gt.unixtime_ms)
        keep = [y != NULL_ID for y in gt.op_ids]
        truth += [y for y, k in zip(gt.op_ids, keep, strict=True) if k]
        pred += [y for y, k in zip(sub["prediction"], keep, strict=True) if k]
    return f1_score(truth, pred, labels=list(OPERATION_IDS), average="macro", zero_division=0)


def test_training_learns_two_operations(two_class_run):
    """A short run on two synthetic operations classifies the held-out user's clips well above chance (0.5:
    the model must also learn to never answer the 8 operations it never saw)."""
    assert two_class_run.metrics["test/acc"] >= 0.8  # measured 1.0 (val 0.95) on 2026-11-28
    assert two_class_run.metrics["val/acc"] >= 0.8


def trainable_tensors(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}


def test_checkpoint_holds_only_trainable_tensors(tmp_path, shared_data_dir):
    _, _, first = run(tmp_path, shared_data_dir, "a", "trainer.max_epochs=1", "test=false", "export=false")
    ckpt = torch.load(tmp_path / "train" / "runs" / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    module = first.components.module
    trainable = {f"model.{n}" for n, p in module.model.named_parameters() if p.requires_grad}
    model_keys = {k for k in ckpt["state_dict"] if k.startswith("model.")}
    assert model_keys == trainable
    assert ckpt["global_step"] == 4
    state = ckpt["optimizer_states"][0]["state"]
    assert len(state) == len(trainable)


# Several train shards (so resampling matters), two loader workers, LoRA dropout on (the model default 0.05).
RESUME = [
    "trainer.max_epochs=2",
    "data.shards.maxcount=8",
    "dataloader.num_workers=2",
    "test=false",
    "export=false",
]


def test_resume_after_an_epoch_equals_an_uninterrupted_run(tmp_path, shared_data_dir):
    """Stop after epoch 1 of 2, resume from its last.ckpt with the same config: the trainable weights, the
    optimizer and the scheduler end exactly where an uninterrupted 2-epoch run ends."""
    children = set(multiprocessing.active_children())
    _, _, whole = run(tmp_path, shared_data_dir, "whole", *RESUME)
    # the persistent validation workers end with the run (a WebLoader hid them from Lightning's shutdown, and
    # they lived on until garbage collection, which then waited 5 s for each)
    assert set(multiprocessing.active_children()) <= children, "DataLoader workers outlived the run"
    # EarlyStopping with a threshold every score passes stops the run after its first validation
    stop = [
        "+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping",
        "+callbacks.stop.monitor=val/loss",
        "+callbacks.stop.stopping_threshold=1e9",
    ]
    _, _, stopped = run(tmp_path, shared_data_dir, "stopped", *RESUME, *stop)
    assert stopped.components.trainer.current_epoch == 1 and stopped.components.trainer.global_step == 4
    last = tmp_path / "train" / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    _, _, resumed = run(tmp_path, shared_data_dir, "resumed", *RESUME, f"ckpt_path={last}")

    assert resumed.components.trainer.global_step == whole.components.trainer.global_step == 8
    expected, got = trainable_tensors(whole.components.module), trainable_tensors(resumed.components.module)
    assert got.keys() == expected.keys()
    worst = max(float((got[k] - expected[k]).abs().max()) for k in expected)
    assert worst < 1e-6, f"resumed weights differ from the uninterrupted run by up to {worst:.2e}"
    for a, b in zip(whole.components.trainer.optimizers, resumed.components.trainer.optimizers, strict=True):
        assert [g["lr"] for g in a.param_groups] == [g["lr"] for g in b.param_groups]


def test_same_seed_same_metrics(tmp_path, shared_data_dir, default_run):
    """A second run with the same seed (and no export, which comes after the test stage) gives the same metrics."""
    m1 = default_run[1]
    _, m2, _ = run(tmp_path, shared_data_dir, "s2", "export=false")
    for key in ("train/loss", "val/loss", "val/f1_macro", "test/loss"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-6), key


def test_export_round_trip_gives_the_same_predictions(tmp_path, shared_data_dir):
    """Plain transformers (+ peft for the adapter) load the export and score the test clips identically."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _, _, objects = run(tmp_path, shared_data_dir, "exp", "trainer.limit_train_batches=6")
    module, dm, export = objects.components.module, objects.components.datamodule, objects.export_dir
    processor = AutoProcessor.from_pretrained(export)
    merged = AutoModelForImageTextToText.from_pretrained(export).eval()
    meta = json.loads((export / "vlmchallenge.json").read_text())
    adapter = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(meta["base_model"]), export / "adapter"
    ).eval()
    scorer = LabelScorer(processor.tokenizer, module.prompt)
    dm.eval_collate = PromptCollator(processor, module.prompt)  # the exported processor, not the training one
    module.model.eval()
    for batch in dm.test_dataloader():
        before = scorer.score(module.model, batch)
        assert torch.allclose(scorer.score(merged, batch), before, atol=1e-4)
        assert torch.allclose(scorer.score(adapter, batch), before, atol=1e-4)
        assert torch.equal(scorer.score(merged, batch).argmax(1), before.argmax(1))


def test_qlora_trains_in_4bit_on_cpu_through_validation(tmp_path, shared_data_dir):
    """Validation between training steps used to break 4-bit training on AVX512-BF16 CPUs (bnb trap 2)."""
    import bitsandbytes as bnb

    _, metrics, objects = run(
        tmp_path,
        shared_data_dir,
        "q",
        "experiment=tiny_qlora_cpu",
        "trainer.max_epochs=2",
        "~callbacks.model_checkpoint",
        "~callbacks.last_checkpoint",
        "trainer.enable_checkpointing=false",
        "test=false",
        "export=false",
    )
    model = objects.components.module.model
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and not any(
        "visual" in n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)
    )
    assert objects.components.trainer.global_step == 8
    assert math.isfinite(metrics["train/loss"])


MERGE_ATOL = 1e-5


def test_qlora_export_merges_onto_an_unquantized_base(tmp_path, shared_data_dir):
    """Merging LoRA into a 4-bit base is a silent no-op (huggingface/peft#2586): the export must merge onto the
    full-precision base, so each merged weight equals base + scale * B @ A of the trained adapter."""
    import bitsandbytes as bnb
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    _, _, objects = run(tmp_path, shared_data_dir, "qx", "experiment=tiny_qlora_cpu", "test=false")
    export = objects.export_dir
    meta = json.loads((export / "vlmchallenge.json").read_text())
    assert meta["quantized_training"] is True
    merged = AutoModelForImageTextToText.from_pretrained(export)
    base = AutoModelForImageTextToText.from_pretrained(meta["base_model"])
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    adapter = load_file(export / "adapter" / "adapter_model.safetensors")
    config = json.loads((export / "adapter" / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    merged_w, base_w = merged.state_dict(), base.state_dict()
    checked = 0
    for name, a in adapter.items():
        if ".lora_A." not in name:
            continue
        b = adapter[name.replace(".lora_A.", ".lora_B.")]
        # adapter keys: base_model.model.<module>.lora_A.weight -> model weight key: <module>.weight
        module = name.removeprefix("base_model.model.").split(".lora_A.")[0]
        expected = base_w[f"{module}.weight"] + scale * (b @ a)
        assert torch.allclose(merged_w[f"{module}.weight"], expected, atol=MERGE_ATOL), module
        # the adapter moves the weights by far more than the tolerance, so merged == base would fail above
        assert (scale * (b @ a)).abs().max() > 10 * MERGE_ATOL, module
        checked += 1
    assert checked > 0
