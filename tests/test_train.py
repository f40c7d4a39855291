"""End-to-end training on the tiny model: artefacts, adapter-only checkpoints, exact resume, determinism,
export round trip, 4-bit QLoRA on CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import compose_train
from vlmchallenge.models.collator import PromptCollator
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.train import train


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def run(tmp_path, shared_data_dir, name, *overrides):
    cfg = compose_train(
        tmp_path / "train" / "runs" / name, shared_data_dir, list(overrides), log_dir=tmp_path
    )
    metrics, objects = train(cfg)
    return cfg, metrics, objects


def test_train_validate_test_export(tmp_path, shared_data_dir):
    cfg, metrics, objects = run(tmp_path, shared_data_dir, "run")
    out = tmp_path / "train" / "runs" / "run"
    assert {"val/f1_macro", "val/acc", "test/f1_macro", "test/acc", "train/loss"} <= set(metrics)
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert (out / "csv" / "metrics.csv").exists()
    export = objects["export_dir"]
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "label_map.json",
        "vlmchallenge.json",
    } <= {p.name for p in export.iterdir()}
    assert (export / "adapter" / "adapter_config.json").exists()
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
    assert metrics["test/openpack_f1_macro"] == report["openpack_official"]["f1_macro"]


def trainable_tensors(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}


def test_checkpoint_holds_only_trainable_tensors(tmp_path, shared_data_dir):
    _, _, first = run(tmp_path, shared_data_dir, "a", "trainer.max_epochs=1", "test=false", "export=false")
    ckpt = torch.load(tmp_path / "train" / "runs" / "a" / "checkpoints" / "last.ckpt", weights_only=False)
    module = first["module"]
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
    "loader.num_workers=2",
    "test=false",
    "export=false",
]


def test_resume_after_an_epoch_equals_an_uninterrupted_run(tmp_path, shared_data_dir):
    """Stop after epoch 1 of 2, resume from its last.ckpt with the same config: the trainable weights, the
    optimizer and the scheduler end exactly where an uninterrupted 2-epoch run ends."""
    _, _, whole = run(tmp_path, shared_data_dir, "whole", *RESUME)
    # EarlyStopping with a threshold every score passes stops the run after its first validation
    stop = [
        "+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping",
        "+callbacks.stop.monitor=val/loss",
        "+callbacks.stop.stopping_threshold=1e9",
    ]
    _, _, stopped = run(tmp_path, shared_data_dir, "stopped", *RESUME, *stop)
    assert stopped["trainer"].current_epoch == 1 and stopped["trainer"].global_step == 4
    last = tmp_path / "train" / "runs" / "stopped" / "checkpoints" / "last.ckpt"
    _, _, resumed = run(tmp_path, shared_data_dir, "resumed", *RESUME, f"ckpt_path={last}")

    assert resumed["trainer"].global_step == whole["trainer"].global_step == 8
    expected, got = trainable_tensors(whole["module"]), trainable_tensors(resumed["module"])
    assert got.keys() == expected.keys()
    worst = max(float((got[k] - expected[k]).abs().max()) for k in expected)
    assert worst < 1e-6, f"resumed weights differ from the uninterrupted run by up to {worst:.2e}"
    for a, b in zip(whole["trainer"].optimizers, resumed["trainer"].optimizers, strict=True):
        assert [g["lr"] for g in a.param_groups] == [g["lr"] for g in b.param_groups]


def test_same_seed_same_metrics(tmp_path, shared_data_dir):
    _, m1, _ = run(tmp_path, shared_data_dir, "s1", "export=false")
    _, m2, _ = run(tmp_path, shared_data_dir, "s2", "export=false")
    for key in ("train/loss", "val/loss", "val/f1_macro", "test/loss"):
        assert m1[key] == pytest.approx(m2[key], abs=1e-6), key


def test_export_round_trip_gives_the_same_predictions(tmp_path, shared_data_dir):
    """Plain transformers (+ peft for the adapter) load the export and score the test clips identically."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _, _, objects = run(tmp_path, shared_data_dir, "exp", "trainer.limit_train_batches=6")
    module, dm, export = objects["module"], objects["datamodule"], objects["export_dir"]
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
        "+experiment=tiny_qlora_cpu",
        "trainer.max_epochs=2",
        "~callbacks.model_checkpoint",
        "~callbacks.last_checkpoint",
        "trainer.enable_checkpointing=false",
        "test=false",
        "export=false",
    )
    model = objects["module"].model
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and not any(
        "visual" in n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)
    )
    assert objects["trainer"].global_step == 8
    assert math.isfinite(metrics["train/loss"])


def test_export_cli_from_a_checkpoint(tmp_path, shared_data_dir):
    import subprocess
    import sys

    from transformers import AutoModelForImageTextToText

    _, _, objects = run(tmp_path, shared_data_dir, "cli", "export=false", "test=false")
    ckpt = tmp_path / "train" / "runs" / "cli" / "checkpoints" / "last.ckpt"
    # the run config must be where Hydra would have written it
    (ckpt.parent.parent / ".hydra").mkdir(exist_ok=True)
    from omegaconf import OmegaConf

    cfg = compose_train(tmp_path / "train" / "runs" / "cli", shared_data_dir, ["export=false", "test=false"])
    OmegaConf.save(
        OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
        ckpt.parent.parent / ".hydra" / "config.yaml",
    )
    out = tmp_path / "exported"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlmchallenge.export",
            f"ckpt={ckpt}",
            f"out_dir={out}",
            f"paths.log_dir={tmp_path}/logs",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = AutoModelForImageTextToText.from_pretrained(out)
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert type(merged).__name__ == "Qwen2VLForConditionalGeneration"


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_evaluate_an_export_folder(tmp_path, shared_data_dir, mode):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from tests.conftest import CONF_DIR
    from vlmchallenge.evaluate import evaluate

    _, _, objects = run(tmp_path, shared_data_dir, "ev", "test=false")
    data_overrides = [o for o in compose_train.__globals__["TINY_TRAIN_OVERRIDES"] if o.startswith("data.")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[
                *data_overrides,
                f"paths.data_dir={shared_data_dir}",
                f"export_dir={objects['export_dir']}",
                f"mode={mode}",
                "loader.num_workers=0",
            ],
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
    report = evaluate(cfg)
    assert report["mode"] == mode and report["clips"] > 0
    assert 0.0 <= report["openpack_official"]["f1_macro"] <= 1.0
    assert (tmp_path / "eval" / "submission.zip").exists()
    if mode == "generate":
        assert "map" not in report["clip_metrics"] and report["invalid_generations"] >= 0
