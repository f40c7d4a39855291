"""Video time encoding (docs/tiny-vlm.md §4): every path that hands frames to the processor gives it the fps
the clip was sampled at, so a Qwen2.5-VL processor's `second_per_grid_ts` is `temporal_patch_size / fps`.

The Qwen2.5-VL processor and model are the family's tiny model, built offline (models/families/). Training clips come from real shards of the synthetic tree; serving reads the same
clips' raw JPEGs through the serving engine of a real export folder."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmchallenge.data.clip_builder import ClipConfig
from vlmchallenge.data.frame_sampler import SamplerConfig
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.data.pipeline import prepare
from vlmchallenge.inference.annotator import RecordingAnnotator
from vlmchallenge.inference.engine import VLMInference, decode_image
from vlmchallenge.models.collator import Example, PromptCollator, TrainCollator
from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.exporter import export_model
from vlmchallenge.models.families import TinyModelSpec
from vlmchallenge.models.label_scorer import LabelScorer
from vlmchallenge.models.loader import load_processor, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder, operation_names
from vlmchallenge.models.video_timing import clip_duration_ms, untimed_clip_ms
from vlmchallenge.training.config import DataLoaderConfig
from vlmchallenge.training.datamodule import ShardDataModule

WINDOW_S = 4.0
# (frames per clip, sampled fps): 8 frames in 4 s is 2 fps, 4 frames in 4 s is 1 fps
SETTINGS = [(8, 2.0), (4, 1.0)]


@pytest.fixture(scope="module")
def tiny_path(shared_data_dir) -> str:
    """The tiny Qwen2.5-VL (models/families/qwen2_vl.py), built offline like every family's tiny model."""
    spec = TinyModelSpec(family="qwen2_5_vl")
    return resolve_pretrained(ModelConfig(tiny=spec, cache_dir=str(shared_data_dir / "models")))


def qwen25_processor(tiny_path: str, sampler):
    return load_processor(tiny_path, sampler)


def tiny_qwen25_model(tiny_path: str):
    """The tiny Qwen2.5-VL's architecture with weights larger than the default 0.02, so scores react to
    position ids (and so to the time step)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.from_pretrained(tiny_path, local_files_only=True)
    cfg.text_config.initializer_range = cfg.vision_config.initializer_range = 0.1
    cfg.vision_config.tokens_per_second = 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModelForImageTextToText.from_config(cfg).eval()


@dataclasses.dataclass
class Case:
    frames: int
    fps: float
    data_cfg: object
    examples: list[Example]  # test-split clips read back from the shards
    engine: VLMInference  # serving an export of a tiny Qwen2.5-VL with these data settings


@pytest.fixture(params=SETTINGS, ids=[f"{n}frames_in_{WINDOW_S:g}s" for n, _ in SETTINGS])
def case(request, data_cfg, tiny_path, tmp_path, data_dir) -> Case:
    frames, fps = request.param
    cfg = copy.deepcopy(data_cfg)
    cfg.clips = dataclasses.replace(cfg.clips, window_s=WINDOW_S, stride_s=2.0, min_frames=4)
    cfg.sampler = dataclasses.replace(cfg.sampler, num_frames=frames)
    prepare(cfg, data_dir)
    dm = ShardDataModule(
        cfg, DataLoaderConfig(num_workers=0, eval_batch_size=3), data_dir, eval_collate=lambda xs: xs
    )
    dm.setup("test")
    examples = next(iter(dm.test_dataloader()))
    assert len(examples) == 3 and all(len(ex.frames) == frames for ex in examples)
    model_cfg = ModelConfig(tiny=TinyModelSpec(family="qwen2_5_vl"))
    export = export_model(
        tiny_qwen25_model(tiny_path),
        qwen25_processor(tiny_path, cfg.sampler),
        model_cfg,
        tiny_path,
        cfg,
        PromptBuilder(),
        tmp_path / "export",
    )
    return Case(frames, fps, cfg, examples, VLMInference(export, device="cpu"))


def session_frames(cfg, meta: dict) -> JpegFolderSource:
    return JpegFolderSource(
        Path(cfg.root) / meta["user"] / "kinect" / "color-masked" / "frames" / meta["session"]
    )


def raw_frames(cfg, meta: dict):
    """The source JPEGs of a shard clip's sampled frames, opened as a client's upload would be."""
    source = session_frames(cfg, meta)
    path_at = dict(zip(source.timestamps_ms.tolist(), source.paths, strict=True))
    return [decode_image(Path(path_at[t]).read_bytes(), "frame") for t in meta["frame_ts_ms"]]


def test_training_and_serving_encode_the_sampled_fps(case):
    """Collators (training, evaluation) and the serving engine (untimed frames and timestamped windows) give
    `second_per_grid_ts = temporal_patch_size / sampled_fps`, and the same batch for the same frames."""
    engine = case.engine
    assert type(engine.processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(engine.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    expected = engine.processor.video_processor.temporal_patch_size / case.fps
    train = TrainCollator(engine.processor, engine.prompt)(case.examples)
    evaluation = PromptCollator(engine.processor, engine.prompt)(case.examples)
    for batch in (train, evaluation):
        assert batch["second_per_grid_ts"].tolist() == pytest.approx([expected] * 3, abs=1e-9)

    clips = [engine.prepare_clip(raw_frames(case.data_cfg, ex.meta)) for ex in case.examples]
    for clip, ex in zip(clips, case.examples, strict=True):
        assert np.array_equal(clip, ex.frames)  # the same frames as training
    untimed = engine.encode(clips)
    spans = [{"start_ms": ex.meta["start_ms"], "end_ms": ex.meta["end_ms"]} for ex in case.examples]
    for served in (untimed, engine.encode(clips, spans)):
        for key in (
            "second_per_grid_ts",
            "input_ids",
            "attention_mask",
            "pixel_values_videos",
            "video_grid_thw",
        ):
            assert torch.equal(served[key], evaluation[key]), key
    # the served probabilities are the evaluation scorer's for the same clips
    served = np.asarray([list(r["probabilities"].values()) for r in engine.predict_batch(clips)])
    scored = engine.scorer.score(engine.model, evaluation).softmax(1).numpy()
    assert np.allclose(served, scored, atol=1e-6)


@pytest.mark.parametrize("case", [SETTINGS[0]], indirect=True, ids=["8frames_in_4s"])
def test_annotate_times_windows_cut_at_the_range_by_their_span(case):
    """A window cut to the annotated range holds its frames over a shorter span (a higher fps): annotate scores
    it with that span, not as an untimed full-length clip."""
    engine = case.engine
    source = session_frames(case.data_cfg, case.examples[0].meta)
    start = int(source.timestamps_ms[0])
    predicted = RecordingAnnotator(engine).annotate(source, start, start + 5_000)
    first = predicted.windows[0]
    assert first.end_ms - first.start_ms < WINDOW_S * 1000  # cut at the range start
    clip = np.stack([engine.sampler.as_trained(Image.open(source.paths[i])) for i in first.frames])
    span = [{"start_ms": first.start_ms, "end_ms": first.end_ms}]
    timed = engine.encode([clip], span)["second_per_grid_ts"]
    assert timed.tolist() == pytest.approx([2 / (len(first.frames) * 1000 / (first.end_ms - first.start_ms))])

    def probs(results):
        return np.asarray([results[0]["probabilities"][n] for n in predicted.class_names])

    assert np.allclose(predicted.probabilities[0], probs(engine.predict_batch([clip], span)), atol=1e-6)
    assert not np.allclose(predicted.probabilities[0], probs(engine.predict_batch([clip])), atol=1e-6)


def test_the_scorer_passes_the_time_step_to_qwen25(tiny_path):
    """On a tiny Qwen2.5-VL the time step moves the temporal position ids: the KV-cached scorer must pass it
    (it equals the per-class forwards, which pass it too) and a wrong fps must change the scores."""
    processor = qwen25_processor(tiny_path, SamplerConfig(min_pixels=56 * 56, max_pixels=112 * 84))
    model = tiny_qwen25_model(tiny_path)
    prompt = PromptBuilder(class_names=operation_names()[:3])  # 3 classes keep the per-class reference short
    scorer = LabelScorer(processor.tokenizer, prompt)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (8, 84, 112, 3), dtype=np.uint8) for _ in range(2)]

    def scores(duration_ms: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = PromptCollator(processor, prompt)(
            [Example(f, 0, {"duration_ms": duration_ms}) for f in frames]
        )
        assert batch["second_per_grid_ts"].tolist() == pytest.approx([2 / (8000 / duration_ms)] * 2)
        return scorer.score(model, batch), scorer.score_naive(model, batch)

    at_1fps, naive = scores(8000)
    assert torch.allclose(at_1fps, naive, atol=1e-5)
    at_4fps, _ = scores(2000)
    assert not torch.allclose(at_1fps, at_4fps, atol=1e-4)


def test_clip_timing_comes_from_the_metadata_or_a_clear_error():
    assert clip_duration_ms({"start_ms": 1_000, "end_ms": 5_000}) == 4_000
    assert clip_duration_ms({"duration_ms": 2_000}) == 2_000
    with pytest.raises(
        ValueError, match=r"clip U1-S1-3: metadata has no timing \(keys: \['key'\]\).*start_ms"
    ):
        clip_duration_ms({"key": "U1-S1-3"}, "clip U1-S1-3")
    with pytest.raises(ValueError, match="start_ms=5000, end_ms=5000 gives a clip duration of 0.0 ms"):
        clip_duration_ms({"start_ms": 5_000, "end_ms": 5_000})


def test_untimed_frames_span_one_training_clip(caplog):
    assert untimed_clip_ms(ClipConfig(mode="window", window_s=4.0)) == 4_000
    with caplog.at_level(logging.WARNING):
        assert untimed_clip_ms(ClipConfig(mode="segment", window_s=2.0, max_duration_s=6.0)) == 6_000
    assert "clips.max_duration_s=6.0" in caplog.text


def test_frames_without_timing_are_refused_not_taken_as_24_fps(tiny_path):
    processor = qwen25_processor(tiny_path, SamplerConfig())
    clip = Example(np.zeros((4, 56, 112, 3), dtype=np.uint8), 0, {"key": "U1-S1-0"})
    with pytest.raises(ValueError, match="clip U1-S1-0: metadata has no timing"):
        PromptCollator(processor, PromptBuilder())([clip])
