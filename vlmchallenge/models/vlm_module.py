"""The LightningModule: a (Q)LoRA VLM trained on answer tokens, evaluated by ranking the class names."""

from __future__ import annotations

import logging
import math

import pytorch_lightning as pl
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from vlmchallenge.models.adapters import apply_adapters, trainable_report
from vlmchallenge.models.collator import vision_tokens
from vlmchallenge.models.config import ModelConfig, OptimConfig
from vlmchallenge.models.label_scorer import PROMPT_KEYS, LabelScorer, generate_answers
from vlmchallenge.models.loader import load_base_model
from vlmchallenge.models.prompt import PromptBuilder

log = logging.getLogger(__name__)
MODEL_KEYS = (*PROMPT_KEYS, "labels")


def eval_metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class VLMClassifier(pl.LightningModule):
    def __init__(
        self,
        model_cfg: ModelConfig,
        optim_cfg: OptimConfig,
        pretrained: str,
        prompt: PromptBuilder,
        tokenizer,
    ):
        super().__init__()
        self.model_cfg, self.optim_cfg, self.pretrained, self.prompt = (
            model_cfg,
            optim_cfg,
            pretrained,
            prompt,
        )
        self.scorer = LabelScorer(tokenizer, prompt)
        self.model = None
        k = len(prompt.class_names)
        self.val_metrics = eval_metrics(k, "val/")
        self.test_metrics = eval_metrics(k, "test/")
        self.strict_loading = False  # checkpoints hold only the trainable tensors (adapter + saved modules)
        self.test_predictions: list[dict] = []
        self.tokenizer = tokenizer
        self.eval_mode = "score"  # score | generate (test stage only; validation always scores)

    # ------------------------------------------------------------------ model

    def configure_model(self) -> None:
        if self.model is not None:  # idempotent: called for every stage
            return
        base = load_base_model(self.model_cfg, self.pretrained, device=self.device)
        self.model = apply_adapters(base, self.model_cfg)
        self.model.train()  # from_pretrained returns eval mode; LoRA dropout must be live
        report = trainable_report(self.model)
        log.info("trainable parameters: %s", report)
        self.trainable = report

    def forward(self, batch: dict):
        return self.model(**{k: batch[k] for k in MODEL_KEYS if k in batch}, use_cache=False)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self(batch).loss
        n = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        if batch_idx == 0:
            tokens = vision_tokens(batch["video_grid_thw"]).float().mean()
            self.log("train/vision_tokens", tokens, batch_size=n)
            self.log("train/seq_len", float(batch["input_ids"].shape[1]), batch_size=n)
            if self.global_step == 0:
                log.info(
                    "vision tokens per clip: %d (video grid t,h,w = %s); sequence length %d",
                    int(tokens),
                    batch["video_grid_thw"][0].tolist(),
                    batch["input_ids"].shape[1],
                )
        return loss

    def _evaluate(self, batch: dict, metrics: MetricCollection, stage: str) -> torch.Tensor:
        scores = self.scorer.score(self.model, batch).to(self.device)
        target = batch["class_index"]
        # teacher-forced loss of the true answer, per token (comparable to train/loss)
        nll = -scores.gather(1, target[:, None]).squeeze(1) / self.scorer.lengths.to(self.device)[target]
        metrics.update(scores.argmax(1), target)
        self.log(f"{stage}/loss", nll.mean(), batch_size=len(target), sync_dist=True)
        return scores

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        targets = batch["class_index"].tolist()
        if self.eval_mode == "generate":
            steps = int(self.scorer.lengths.max()) + 2
            texts = generate_answers(self.model, self.tokenizer, batch, self.prompt, steps)
            for meta, text, y in zip(batch["meta"], texts, targets, strict=True):
                answer = text.split(self.prompt.answer_suffix)[0]
                self.test_predictions.append(
                    {"meta": meta, "target": y, "pred": self.prompt.parse(answer), "text": answer}
                )
            return
        scores = self._evaluate(batch, self.test_metrics, "test")
        probs = scores.softmax(1).cpu()
        for meta, p, y in zip(batch["meta"], probs, targets, strict=True):
            self.test_predictions.append(
                {"meta": meta, "target": y, "probs": p.tolist(), "pred": int(p.argmax())}
            )

    def on_test_epoch_start(self) -> None:
        self.test_predictions = []

    def on_test_epoch_end(self) -> None:
        if self.eval_mode == "score":
            self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        cfg = self.optim_cfg
        if cfg.name == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))
        elif cfg.name in ("adamw_8bit", "paged_adamw_8bit"):
            import bitsandbytes as bnb

            cls = bnb.optim.PagedAdamW8bit if cfg.name.startswith("paged") else bnb.optim.AdamW8bit
            opt = cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=tuple(cfg.betas))
        else:
            raise ValueError(f"optim.name: expected adamw, adamw_8bit or paged_adamw_8bit, got {cfg.name!r}")
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(cfg.warmup_steps, total // 2)

        def schedule(step: int) -> float:  # linear warmup, then cosine to min_lr_ratio
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ adapter-only checkpoints

    def state_dict(self, *args, **kwargs):
        """Only trainable tensors: an adapter-sized checkpoint that still resumes exactly (the frozen base is
        reloaded from `pretrained`)."""
        full = super().state_dict(*args, **kwargs)
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        return {k: v for k, v in full.items() if k in trainable or not k.startswith("model.")}
