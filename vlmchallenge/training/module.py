"""The LightningModule: a (Q)LoRA VLM trained on answer tokens, evaluated by ranking the class names.

Its hyperparameters (model, optimizer, prompt and test mode) are saved in every checkpoint, so a checkpoint
describes its own model (see `vlmchallenge.assembly.settings_from_checkpoint`).
"""

from __future__ import annotations

from dataclasses import asdict

import hydra
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_info
from torchmetrics import MeanMetric, MetricCollection
from transformers import get_scheduler

from vlmchallenge.evaluation.clip_prediction import ClipPrediction
from vlmchallenge.evaluation.metrics import clip_metrics
from vlmchallenge.models.adapters import apply_adapters, trainable_report
from vlmchallenge.models.config import ModelConfig, OptimConfig
from vlmchallenge.models.families import Family
from vlmchallenge.models.label_scorer import PROMPT_KEYS, LabelScorer, generate_answers
from vlmchallenge.models.loader import load_base_model, resolve_pretrained
from vlmchallenge.models.prompt import PromptBuilder
from vlmchallenge.training.answer_loss import answer_forward
from vlmchallenge.training.shard_errors import SKIPPED_KEY

TEST_MODES = ("score", "generate")


class VLMClassifier(pl.LightningModule):
    def __init__(
        self,
        model: ModelConfig,
        family: Family,
        prompt: PromptBuilder,
        tokenizer,
        optim: OptimConfig | None = None,
        test_mode: str = "score",
    ):
        """`family` is the one the run was planned for (assembly resolves it once, before any weights load);
        `optim` is needed to train only; `test_mode` is how the test stage predicts: `score` ranks the class
        names (validation always does), `generate` decodes greedily and parses the answer."""
        super().__init__()
        if test_mode not in TEST_MODES:
            raise ValueError(f"mode: expected one of {TEST_MODES}, got {test_mode!r}")
        self.save_hyperparameters(
            {
                "model": asdict(model),
                "optim": asdict(optim) if optim is not None else None,
                "prompt": prompt.to_dict(),
                "test_mode": test_mode,
            },
            logger=False,
        )
        self.model_cfg, self.optim_cfg, self.prompt, self.test_mode = model, optim, prompt, test_mode
        self.family = family
        self.tokenizer = tokenizer
        self.scorer = LabelScorer(tokenizer, prompt)
        self.model = None
        k = len(prompt.class_names)
        # Under DDP each rank evaluates its own shards, so ranks run different numbers of evaluation steps (one
        # may run none). Everything evaluated is therefore a torchmetrics state, synchronised once per epoch in
        # `compute()` on every rank, never a per-step `self.log(sync_dist=True)` that an idle rank would miss.
        self.val_metrics = clip_metrics(k, "val/", only=("acc", "f1_macro"))
        self.test_metrics = clip_metrics(k, "test/", only=("acc", "f1_macro"))
        self.val_metrics.add_metrics({"loss": MeanMetric()})
        self.test_metrics.add_metrics({"loss": MeanMetric()})
        self.strict_loading = False  # checkpoints hold only the trainable tensors (adapter + saved modules)
        self.test_predictions: list[ClipPrediction] = []

    # ------------------------------------------------------------------ model

    def configure_model(self) -> None:
        if self.model is not None:  # idempotent: called for every stage
            return
        base = load_base_model(
            self.model_cfg, resolve_pretrained(self.model_cfg), device=self.device, planned=self.family
        )
        self.model = apply_adapters(base, self.model_cfg)
        self.model.train()  # from_pretrained returns eval mode; LoRA dropout must be live
        rank_zero_info(f"trainable parameters: {trainable_report(self.model)}")

    def forward(self, batch: dict):
        """The output with `loss` over the answer tokens; `lm_head` runs at those positions only."""
        return answer_forward(self.model, {k: batch[k] for k in PROMPT_KEYS if k in batch}, batch["labels"])

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        n = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        if SKIPPED_KEY in batch:  # this epoch's samples lost to unreadable shards so far (ShardDataModule)
            self.log("data/skipped_samples", float(batch[SKIPPED_KEY]), batch_size=n)
        if batch_idx == 0:
            tokens = self.family.video_inputs.vision_tokens(batch).float().mean()
            self.log("train/vision_tokens", tokens, batch_size=n)
            self.log("train/seq_len", float(batch["input_ids"].shape[1]), batch_size=n)
            if self.global_step == 0:
                rank_zero_info(
                    f"vision tokens per clip: {int(tokens)}; sequence length {batch['input_ids'].shape[1]}"
                )
        return loss

    def _evaluate(self, batch: dict, metrics: MetricCollection) -> torch.Tensor:
        scores = self.scorer.score(self.model, batch).to(self.device)
        target = batch["class_index"]
        # teacher-forced loss of the true answer, per token (comparable to train/loss)
        nll = -scores.gather(1, target[:, None]).squeeze(1) / self.scorer.lengths.to(self.device)[target]
        preds = scores.argmax(1)
        for name, metric in metrics.items(keep_base=True):
            metric.update(nll) if name == "loss" else metric.update(preds, target)
        return scores

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        # compute() has already reduced over ranks, so every rank logs the same values; sync_dist (a mean of
        # equal values, called by every rank here) only tells Lightning they are global
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        targets = batch["class_index"].tolist()
        if self.test_mode == "generate":
            steps = int(self.scorer.lengths.max()) + 2
            texts = generate_answers(self.model, self.tokenizer, batch, self.prompt, steps)
            for meta, text, y in zip(batch["meta"], texts, targets, strict=True):
                answer = text.split(self.prompt.answer_suffix)[0]
                self.test_predictions.append(ClipPrediction(meta, y, self.prompt.parse(answer), text=answer))
            return
        scores = self._evaluate(batch, self.test_metrics)
        probs = scores.softmax(1).cpu()
        for meta, p, y in zip(batch["meta"], probs, targets, strict=True):
            self.test_predictions.append(ClipPrediction(meta, y, int(p.argmax()), tuple(p.tolist())))

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def on_test_epoch_end(self) -> None:
        if self.test_mode == "score":
            self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()
        self.test_predictions = gather_predictions(self.test_predictions)

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        cfg = self.optim_cfg
        if cfg is None:
            raise ValueError("this module was built for evaluation (no optim config); it cannot be trained")
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = hydra.utils.instantiate(cfg.optimizer)(params)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_scheduler(
            cfg.scheduler,
            optimizer,
            num_warmup_steps=min(cfg.warmup_steps, total // 2),
            num_training_steps=total,
            scheduler_specific_kwargs=cfg.scheduler_kwargs or None,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ adapter-only checkpoints

    def state_dict(self, *args, **kwargs):
        """Only trainable tensors: an adapter-sized checkpoint that still resumes exactly (the frozen base is
        reloaded from `pretrained`)."""
        full = super().state_dict(*args, **kwargs)
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        return adapter_only(full, trainable)


def gather_predictions(local: list[ClipPrediction]) -> list[ClipPrediction]:
    """Every rank's per-clip predictions, on every rank, in key order (the same list a 1-process run makes).
    Each clip lives in exactly one rank's shards, so a key seen twice is a data-split bug, not a duplicate."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        local = [p for part in parts for p in part]
    keys = [p.key for p in local]
    if len(set(keys)) != len(keys):
        raise RuntimeError("a clip was evaluated by more than one rank; the evaluation split is not disjoint")
    return sorted(local, key=lambda p: p.key)


def adapter_only(state: dict, trainable: set[str]) -> dict:
    """What an adapter-only checkpoint keeps of a module's state dict: the trainable `model.*` tensors and
    everything outside `model.` (the frozen base is reloaded from `pretrained`)."""
    return {k: v for k, v in state.items() if k in trainable or not k.startswith("model.")}
