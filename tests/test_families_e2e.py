"""The whole path for the current families on CPU (docs/families.md): `experiment=tiny_qwen3vl_cpu`,
`experiment=tiny_qwen35_cpu` and `experiment=tiny_internvl_cpu` train, validate, test and export through the real
entry-point code; the export then
serves (the engine behind `/predict`, the chat route and `/annotate`) and annotates a recording. The same frames
give the same `input_ids`, positions and scores in evaluation and in serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.runs import compose_train
from vlmchallenge.inference.annotator import RecordingAnnotator
from vlmchallenge.inference.engine import VLMInference
from vlmchallenge.models.collator import PromptCollator, TrainCollator
from vlmchallenge.models.families import family_of
from vlmchallenge.models.label_scorer import PROMPT_KEYS
from vlmchallenge.training.config import DataLoaderConfig
from vlmchallenge.training.datamodule import ShardDataModule

EXPERIMENTS = {
    "tiny_qwen3vl_cpu": "Qwen3VLForConditionalGeneration",
    "tiny_qwen35_cpu": "Qwen3_5ForConditionalGeneration",
    "tiny_internvl_cpu": "InternVLForConditionalGeneration",
}


@pytest.fixture(scope="module", params=sorted(EXPERIMENTS))
def family_run(request, tmp_path_factory):
    from vlmchallenge.workflows import train

    root = tmp_path_factory.mktemp(request.param)
    cfg = compose_train(root / "train" / "runs" / "run", root / "data", [f"experiment={request.param}"], root)
    try:
        result = train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return request.param, cfg, result


def test_the_tiny_family_trains_tests_and_exports(family_run):
    experiment, cfg, result = family_run
    model = result.components.module.model.base_model.model
    assert type(model).__name__ == EXPERIMENTS[experiment]
    geometry = family_of(model.config).geometry
    if geometry.keeps_sampled_size:  # the family's grid (Qwen3's 32 px from experiment/common/grid32.yaml)
        assert cfg.data.sampler.patch_factor == geometry.grid_px
    for key in ("val/f1_macro", "test/f1_macro", "test/openpack_f1_macro"):
        assert 0.0 <= float(result.metrics[key]) <= 1.0, key
    assert (result.report_dir / "report.md").is_file()
    assert (result.export_dir / "config.json").is_file()


def test_serving_encodes_and_scores_as_evaluation_did(family_run):
    """The export's engine (what every route calls) gives the evaluation batch, token for token, and its
    probabilities are the evaluation scorer's for the same clips."""
    _, _, result = family_run
    parts = result.components
    engine = VLMInference(result.export_dir, device="cpu")
    assert engine.prompt.template_kwargs == parts.prompt.template_kwargs
    settings = parts.settings
    raw = ShardDataModule(
        settings.data,
        DataLoaderConfig(num_workers=0, eval_batch_size=3),
        settings.data_dir,
        eval_collate=list,
    )
    raw.setup("test")
    clips = next(iter(raw.test_dataloader()))
    evaluation = PromptCollator(engine.processor, engine.prompt)(clips)
    spans = [{"start_ms": ex.meta["start_ms"], "end_ms": ex.meta["end_ms"]} for ex in clips]
    served = engine.encode([ex.frames for ex in clips], spans)
    keys = [key for key in PROMPT_KEYS if key in evaluation]
    assert {"input_ids", family_of(engine.model.config).video_inputs.pixels} <= set(keys)
    for key in keys:
        assert torch.equal(served[key], evaluation[key]), key
    # training saw the same prompt tokens, with the answer after them
    train = TrainCollator(engine.processor, engine.prompt)(clips)
    for row in range(len(clips)):
        prompt = evaluation["input_ids"][row][evaluation["attention_mask"][row].bool()]
        assert torch.equal(train["input_ids"][row][: len(prompt)], prompt)
    answers = engine.predict_batch([ex.frames for ex in clips], spans)
    probs = np.asarray([list(r["probabilities"].values()) for r in answers])
    scored = engine.scorer.score(engine.model, evaluation).softmax(1).numpy()
    assert np.allclose(probs, scored, atol=1e-6)


def test_the_export_annotates_a_recording_second_by_second(family_run):
    _, cfg, result = family_run
    from vlmchallenge.data.frame_source import JpegFolderSource

    engine = VLMInference(result.export_dir, device="cpu")
    user, session = cfg.data.splits.test[0], "S0100"
    source = JpegFolderSource(Path(cfg.data.root) / user / "kinect" / "color-masked" / "frames" / session)
    start = int(source.timestamps_ms[0])
    predicted = RecordingAnnotator(engine).annotate(source, start, start + 8_000)
    first, last = predicted.range_ms  # the requested range cut to the frames in it
    assert first == start and start + 7_000 < last <= start + 8_000
    # a window every `stride_s` of the export's clips (2 s in these runs) over the 8 s
    stride_ms = 1000 * cfg.data.clips.stride_s
    assert len(predicted.windows) == len(predicted.probabilities) >= int(7_000 // stride_ms)
    assert np.allclose(predicted.probabilities.sum(1), 1.0, atol=1e-5)
