"""Lightning callback: plan micro-batch and gradient accumulation from the VRAM estimate before any loader is
built, then check the prediction against the measured peak on CUDA.

Lightning's BatchSizeFinder only catches OOM (and fails under DDP); this predicts, explains and checks itself.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

from vlmchallenge.models.adapters import trainable_dtype
from vlmchallenge.models.architectures import model_config_for
from vlmchallenge.models.families import Family
from vlmchallenge.training.vram_math import (
    DEFAULT_LOSS_TOKENS,
    GIB,
    FootprintInputs,
    architecture_from_config,
    plan_batches,
)
from vlmchallenge.training.vram_report import plan_table

log = logging.getLogger(__name__)


def footprint_inputs(
    m,
    family: Family,
    o,
    seq_len: int,
    vision_tokens: int,
    cuda: bool = True,
    loss_tokens: int = DEFAULT_LOSS_TOKENS,
) -> FootprintInputs:
    """A `FootprintInputs` from the model and optimizer configs (shared by the callback and the offline CLI);
    what `m` leaves null comes from its family."""
    m = m.for_family(family)
    method = "qlora" if m.quantization.enabled else ("lora" if m.lora.enabled else "full")
    return FootprintInputs(
        method=method,
        dtype=m.dtype,
        trainable_dtype=str(trainable_dtype(m)).removeprefix("torch."),
        skip_modules=list(m.quantization.skip_modules),
        lora_r=m.lora.r,
        lora_dropout=m.lora.dropout,
        target_regex=m.lora.target_modules,
        modules_to_save=list(m.lora.modules_to_save),
        optimizer=o.optimizer_class,
        gradient_checkpointing=m.gradient_checkpointing,
        attn_implementation=m.attn_implementation,
        seq_len=seq_len,
        vision_tokens=vision_tokens,
        loss_tokens=loss_tokens,
        cuda=cuda,
    )


class VRAMPlanner(pl.Callback):
    def __init__(
        self,
        enabled: bool,
        budget_gib: float | None,
        global_batch_size: int | None,
        margin: float,
        check_after_steps: int = 3,
        tolerance: float = 0.15,
    ):
        """The first four are the `vram` config's (`VRAMConfig`, where their defaults live; conf/callbacks passes
        them); the last two are this callback's own check of the plan against the measured peak."""
        self.enabled, self.budget_gib, self.global_batch_size = enabled, budget_gib, global_batch_size
        self.margin, self.check_after_steps, self.tolerance = margin, check_after_steps, tolerance
        self.batch_plan = None

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not self.enabled:
            return
        dm = trainer.datamodule
        if self.budget_gib is not None:
            budget = int(self.budget_gib * GIB)
        elif torch.cuda.is_available():
            budget = torch.cuda.mem_get_info(trainer.strategy.root_device)[0]
        else:
            log.info(
                "VRAM planner: no CUDA device and no vram.budget_gib; keeping dataloader.batch_size=%d",
                dm.batch_size,
            )
            return
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                "the VRAM planner sets accumulation itself: leave trainer.accumulate_grad_batches at 1"
            )
        batch = dm.peek_train_batch()
        seq_len = int(batch["input_ids"].shape[1])
        vision = int(pl_module.family.video_inputs.vision_tokens(batch).max())
        answer = int((batch["labels"] != -100).sum(1).max())  # the tokens lm_head runs on (answer_loss.py)
        arch = architecture_from_config(model_config_for(pl_module.model_cfg))
        global_batch = self.global_batch_size or dm.batch_size * trainer.world_size
        self.batch_plan = plan_batches(
            arch,
            footprint_inputs(
                pl_module.model_cfg,
                pl_module.family,
                pl_module.optim_cfg,
                seq_len,
                vision,
                torch.cuda.is_available(),
                answer,
            ),
            budget,
            global_batch,
            trainer.world_size,
            self.margin,
        )
        dm.batch_size = self.batch_plan.micro_batch
        trainer.accumulate_grad_batches = self.batch_plan.accumulate
        if trainer.is_global_zero:
            log.info(
                "VRAM plan (per rank, seq %d = %d vision + text tokens):\n%s",
                seq_len,
                vision,
                plan_table(self.batch_plan),
            )
        for lg in trainer.loggers:
            lg.log_hyperparams(
                {
                    "vram/micro_batch": self.batch_plan.micro_batch,
                    "vram/accumulate": self.batch_plan.accumulate,
                    "vram/predicted_gib": self.batch_plan.predicted_bytes / GIB,
                }
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (
            self.batch_plan is None
            or not torch.cuda.is_available()
            or trainer.global_step != self.check_after_steps
        ):
            return
        device = trainer.strategy.root_device
        allocated, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
        predicted = (
            self.batch_plan.predicted_bytes
            - self.batch_plan.terms["cuda_context"]
            - self.batch_plan.terms["allocator_reserve"]
        )
        error = allocated / predicted - 1
        pl_module.log_dict(
            {
                "vram/measured_allocated_gib": allocated / GIB,
                "vram/measured_reserved_gib": reserved / GIB,
                "vram/predicted_allocated_gib": predicted / GIB,
            },
            rank_zero_only=True,
        )
        if abs(error) > self.tolerance:
            log.warning(
                "VRAM prediction off by %+.0f%%: measured max allocated %.2f GiB vs predicted %.2f GiB",
                100 * error,
                allocated / GIB,
                predicted / GIB,
            )
