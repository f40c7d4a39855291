"""Lightning strategies and cluster plugins from YAML-friendly values (dotted class names, signal names).

YAML cannot name a class object or a signal, so `conf/trainer/fsdp.yaml` and `conf/hydra/launcher/slurm.yaml`
point `_target_` at the factories here. `AdapterFSDPStrategy` keeps checkpoints adapter-only under FSDP
(docs/scaling.md §3); the config probes (`strategy_kind`, `deepspeed_stage`) read a trainer node without
building anything, so assembly can refuse a bad combination before any model loads.
"""

from __future__ import annotations

import importlib
import json
import logging
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.strategies import FSDPStrategy
from torch.distributed.fsdp import FullyShardedDataParallel

from vlmchallenge.training.module import adapter_only

log = logging.getLogger(__name__)

STATE_DICT_TYPES = ("full", "sharded")


def resolve_classes(names: Iterable[str], what: str) -> set[type]:
    """Dotted class names -> classes. A name whose *module* is missing is skipped with a warning (that model
    family is not in the installed transformers); a missing class in an existing module is a typo: an error."""
    names = list(names)
    found: set[type] = set()
    for name in names:
        module_name, _, class_name = name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            log.warning(f"{what}: skipping {name} ({exc})")
            continue
        cls = getattr(module, class_name, None)
        if not isinstance(cls, type):
            raise ValueError(f"{what}: {module_name} has no class {class_name!r} (from {name!r})")
        found.add(cls)
    if not found:
        raise ValueError(f"{what}: none of {names} could be imported")
    return found


class AdapterFSDPStrategy(FSDPStrategy):
    """FSDP whose checkpoints hold only the trainable tensors, as `VLMClassifier.state_dict` promises.

    Under FSDP Lightning saves `FSDP(root).state_dict()`, which reaches the LightningModule's `state_dict`
    as a nested call whose return value is ignored (the parent fills a shared `destination`), so the module's
    adapter-only filter has no effect; it is applied here to the gathered dict instead. The trainable names
    are read before wrapping, while they are still the plain names the state-dict keys use.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainable: set[str] | None = None

    def setup(self, trainer) -> None:
        wrapped = any(isinstance(m, FullyShardedDataParallel) for m in self.model.modules())
        if not wrapped:  # a test after fit finds the module wrapped already: keep the names read before
            self._trainable = {n for n, p in self.lightning_module.named_parameters() if p.requires_grad}
        super().setup(trainer)
        units = FullyShardedDataParallel.fsdp_modules(self.model)
        if "auto_wrap_policy" in self.kwargs and len(units) < 2:
            raise ValueError(
                f"FSDP auto-wrap matched no module of {type(self.lightning_module.model).__name__}: add its "
                "decoder-layer / vision-block classes to trainer.strategy.wrap"
            )

    def lightning_module_state_dict(self) -> dict[str, Any]:
        state = super().lightning_module_state_dict()
        # only full state dicts: Lightning loads a sharded checkpoint by asking torch.distributed.checkpoint
        # for every key of the model, which fails on an adapter-only one ("Missing key in checkpoint")
        if self._state_dict_type != "full" or self._trainable is None:
            return state
        return adapter_only(state, self._trainable)  # the rule of VLMClassifier.state_dict


def fsdp_strategy(
    wrap: Iterable[str],
    activation_checkpointing: bool = False,
    state_dict_type: str = "full",
    sharding_strategy: str = "FULL_SHARD",
    **kwargs: Any,
) -> AdapterFSDPStrategy:
    """`FSDPStrategy` auto-wrapping (and, with `activation_checkpointing`, recomputing) the `wrap` classes;
    other keyword arguments go to `FSDPStrategy` (e.g. `cpu_offload`, `process_group_backend`)."""
    if state_dict_type not in STATE_DICT_TYPES:
        raise ValueError(
            f"trainer.strategy.state_dict_type: expected one of {STATE_DICT_TYPES}, got {state_dict_type!r}"
        )
    classes = resolve_classes(wrap, "trainer.strategy.wrap")
    return AdapterFSDPStrategy(
        auto_wrap_policy=classes,
        activation_checkpointing_policy=set(classes) if activation_checkpointing else None,
        state_dict_type=state_dict_type,
        sharding_strategy=sharding_strategy,
        **kwargs,
    )


def slurm_environment(auto_requeue: bool = True, requeue_signal: str = "SIGUSR1") -> SLURMEnvironment:
    """Lightning's SLURM cluster environment, the requeue signal given by name (docs/scaling.md §4)."""
    sig = getattr(signal, requeue_signal, None)
    if not isinstance(sig, signal.Signals):
        raise ValueError(f"requeue_signal: {requeue_signal!r} is not a signal name such as 'SIGUSR1'")
    return SLURMEnvironment(auto_requeue=auto_requeue, requeue_signal=sig)


# ---------------------------------------------------------------- reading a trainer config without building it


def strategy_kind(strategy: Any) -> str:
    """`fsdp`, `deepspeed` or `other` for a trainer's `strategy` value: a registry name (`fsdp`,
    `deepspeed_stage_3`...), a `_target_` node (this module's `fsdp_strategy`, Lightning's classes) or an object."""
    if isinstance(strategy, FSDPStrategy):
        return "fsdp"
    if isinstance(strategy, Mapping):
        strategy = str(strategy.get("_target_", "")).rsplit(".", 1)[-1]
    name = strategy.lower() if isinstance(strategy, str) else type(strategy).__name__.lower()
    for kind in ("fsdp", "deepspeed"):
        if name.startswith(kind):
            return kind
    return "other"


def deepspeed_stage(strategy: Any) -> int | None:
    """The ZeRO stage of a DeepSpeed `strategy` value: `deepspeed_stage_3_offload`, a node with `stage: 3`, or a
    node whose `config` (a dict or a JSON file) has `zero_optimization.stage`. None for other strategies."""
    if strategy_kind(strategy) != "deepspeed":
        return None
    if isinstance(strategy, str):
        stage = strategy.removeprefix("deepspeed").removeprefix("_stage_")[:1]
        return int(stage) if stage.isdigit() else 2  # plain `deepspeed`: Lightning's default, ZeRO-2
    if not isinstance(strategy, Mapping):
        return int(strategy.config["zero_optimization"]["stage"])
    config = strategy.get("config")
    if isinstance(config, str):
        config = json.loads(Path(config).read_text())
    zero = (config or {}).get("zero_optimization") or {}
    return int(zero["stage"]) if "stage" in zero else int(strategy.get("stage", 2))
