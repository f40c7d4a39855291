"""What the annotate command runs, as a library function (testable without a command line). Apart from
`workflows.py` so that annotate, and review when it annotates first, start without importing Lightning: the
offline engine needs transformers only (4 s less at every start on 2 cores).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console

from vlmchallenge.data.video_origin import parse_time
from vlmchallenge.inference.annotate_settings import AnnotateSettings
from vlmchallenge.inference.annotator import RecordingAnnotator, annotate_progress
from vlmchallenge.inference.engine import VLMInference
from vlmchallenge.inference.prediction_outputs import write_outputs
from vlmchallenge.inference.recordings import RecordingOptions, open_recording, reopen_args
from vlmchallenge.inference.segments import Smoothing
from vlmchallenge.utils.runs import print_locations


def annotate(cfg: DictConfig) -> dict:
    """A whole recording through an export folder -> the per-second timeline, operations.csv, submission,
    plot and annotate.json in `cfg.out_dir` (default: the run folder); the official macro-F1 when the
    recording has 1-Hz ground truth. Returns the annotate.json metadata."""
    smoothing = Smoothing(**cfg.smoothing)
    smoothing.validate()  # before anything loads
    start, end = parse_time(cfg.start, "start"), parse_time(cfg.end, "end")
    options = RecordingOptions.of(cfg)
    recording = open_recording(options)
    inference = VLMInference(cfg.export_dir, cfg.device)
    settings = AnnotateSettings(cfg.window_s, cfg.stride_s, cfg.min_frames, cfg.batch_size)
    annotator = RecordingAnnotator(inference, settings)
    console = Console()
    progress, update = annotate_progress(console) if cfg.progress else (nullcontext(), None)
    with progress:
        predicted = annotator.annotate(recording.source, start, end, update)
    out = Path(cfg.out_dir or cfg.paths.output_dir)
    model = {"export_dir": str(cfg.export_dir), "base_model": inference.meta.base_model}
    meta = write_outputs(
        predicted,
        out,
        recording.user,
        recording.session,
        recording.ground_truth,
        smoothing,
        cfg.probabilities,
        {
            "input": str(cfg.input),
            "kind": recording.kind,
            "model": model,
            "recording": reopen_args(options, recording),
        },
    )
    print_locations({"outputs": out, "operations": out / "operations.csv", "timeline": out / "timeline.png"})
    console.print(
        f"{predicted.duration_s:.0f} s annotated in {predicted.wall_s:.1f} s "
        f"({predicted.realtime_factor:.1f}x real time); {meta['segments']} segments; "
        f"seconds: {meta['seconds']}"
    )
    if meta["openpack_official"]:
        console.print(f"OpenPack macro-F1 (1 s): {meta['openpack_official']['f1_macro']:.4f}")
    return meta
