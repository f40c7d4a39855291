"""Register the structured-config schemas in Hydra's ConfigStore.

The dataclasses are the one source of every default: each YAML of a group lists its `base_<group>` schema
first, and `serve.yaml`, `annotate.yaml` and `review.yaml` their command's (`base_serve`, `base_annotate`,
`base_review`); each then holds only what differs, so a typo or a wrong type fails at startup with the offending
key, before any data or model is touched. Import this before `@hydra.main` / `compose`.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from vlmchallenge.data.config import DataConfig
from vlmchallenge.inference.annotate_settings import AnnotateSettings
from vlmchallenge.inference.recordings import RecordingOptions
from vlmchallenge.inference.segments import Smoothing
from vlmchallenge.models.config import ModelConfig, OptimConfig
from vlmchallenge.serving.settings import ServeSettings
from vlmchallenge.training.config import DataLoaderConfig, VRAMConfig


@dataclass
class ServeCommand(ServeSettings):
    """conf/serve.yaml's schema: the serve settings, plus the keys every command's config has."""

    task_name: str = "serve"
    paths: Any = None  # the `paths` group (conf/paths/default.yaml)


@dataclass
class AnnotateCommand(AnnotateSettings, RecordingOptions):
    """conf/annotate.yaml's schema: the recording (`RecordingOptions`), its windows (`AnnotateSettings`), and
    the rest of `python -m vlmchallenge.annotate`."""

    export_dir: str = MISSING
    start: Any = None  # annotate from this time (unix ms or ISO with offset); None: the first frame
    end: Any = None  # ... up to this time (exclusive); None: the last frame
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    probabilities: bool = True  # per-class probability columns in timeline.csv
    smoothing: Smoothing = field(default_factory=Smoothing)  # operations.csv only; off by default
    progress: bool = True
    out_dir: str | None = None  # None: the run folder, outputs/annotate/runs/<time>/
    task_name: str = "annotate"
    paths: Any = None


@dataclass
class ReviewCommand(AnnotateCommand):
    """conf/review.yaml's schema: a finished annotation (`annotation=`), or annotate's settings to make one
    first, and the page's server."""

    annotation: str | None = None  # a folder `annotate` wrote; None: annotate export_dir + input first
    export_dir: Any = None  # only to annotate first
    input: Any = None
    host: str = "127.0.0.1"  # loopback by default; beyond it the page needs api_key (it writes files)
    port: int = 8765  # 0: any free port (the printed URL says which)
    api_key: str | None = None  # review.yaml reads it from the env, as serve does
    # <root>/<user>/<session>: write the reviewed recording there as an OpenPack session, then exit
    export_session: str | None = None
    task_name: str = "review"


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(group="model", name="base_model", node=ModelConfig)
    cs.store(group="optim", name="base_optim", node=OptimConfig)
    cs.store(group="dataloader", name="base_dataloader", node=DataLoaderConfig)
    cs.store(group="vram", name="base_vram", node=VRAMConfig)
    cs.store(name="base_serve", node=ServeCommand)
    cs.store(name="base_annotate", node=AnnotateCommand)
    cs.store(name="base_review", node=ReviewCommand)


def as_dataclass(schema, node):
    """A config node as its dataclass: interpolations resolved, validated against the schema. Works for
    composed configs and for plain dicts (a checkpoint's hyperparameters)."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)  # interpolations resolve against the whole config
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


register_configs()
