"""Structured configs of the Lightning layer: the `dataloader` group and the `vram` group."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataLoaderConfig:
    """DataLoader settings; `batch_size` is the micro-batch (the VRAM planner may overwrite it)."""

    batch_size: int = 8
    eval_batch_size: int = 32
    num_workers: int = 1
    shuffle_buffer: int = 500
    # 0: natural class frequencies; 1: every class equally often. Macro-F1 counts rare classes (e.g. 900) as
    # much as common ones, so the default leans towards them.
    class_balance: float = 0.5

    def validate(self) -> None:
        if not 0.0 <= self.class_balance <= 1.0:
            raise ValueError(
                f"dataloader.class_balance: expected a value in [0, 1], got {self.class_balance}"
            )
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("dataloader.batch_size and dataloader.eval_batch_size must be >= 1")


@dataclass
class VRAMConfig:
    """The VRAM planner (callback) and `python -m vlmchallenge.vram`."""

    enabled: bool = True
    budget_gib: float | None = None  # null: the GPU's free memory (no GPU and null: no planning)
    global_batch_size: int | None = None  # null: dataloader.batch_size x world size
    margin: float = 0.10  # the share of the budget the plan leaves free (allocator fragmentation, spikes)
    text_tokens: int = 120  # offline planning only: prompt + answer tokens (a real run reads its batches)
    source_frame_size: list[int] | None = None  # offline planning: [w, h]; null = synthetic size or 1280x720
    chart: str | None = None  # offline planning: write a stacked-bar PNG of the breakdown here
