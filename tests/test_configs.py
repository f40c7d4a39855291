"""Every shipped config composes into the schemas without loading anything; mistakes fail at startup."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import vlmchallenge.conf_schema  # noqa: F401
from tests.helpers.runs import CONF_DIR
from vlmchallenge.conf_schema import as_dataclass
from vlmchallenge.data.config import DataConfig
from vlmchallenge.models.config import ModelConfig, OptimConfig
from vlmchallenge.models.families import FAMILIES
from vlmchallenge.models.loader import model_family

CONF = Path(CONF_DIR)
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


def compose_train(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_expected_experiments_ship():
    assert {"tiny_cpu", "tiny_qlora_cpu", "qwen2vl_2b_qlora", "qwen25vl_3b_lora", "qwen2vl_7b_qlora"} <= set(
        EXPERIMENTS
    )
    assert {"tiny_qwen2vl", "qwen2vl_2b", "qwen2vl_7b", "qwen25vl_3b", "qwen25vl_7b"} <= set(MODELS)
    assert {"tiny_qwen3vl_cpu", "tiny_qwen35_cpu", "qwen3vl_4b_lora", "qwen35_2b_lora"} <= set(EXPERIMENTS)
    assert {"qwen3vl_2b", "qwen3vl_4b", "qwen3vl_8b", "qwen3vl_30b_a3b"} <= set(MODELS)
    assert {"qwen35_0p8b", "qwen35_2b", "qwen35_4b", "qwen35_9b", "tiny_qwen3vl", "tiny_qwen35"} <= set(
        MODELS
    )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment):
    cfg = compose_train(
        [f"experiment={experiment}", "data.root=/data/openpack/v1.0.0", "paths.output_dir=/tmp/x"]
    )
    model = as_dataclass(ModelConfig, cfg.model)
    model.validate()
    as_dataclass(OptimConfig, cfg.optim)
    as_dataclass(DataConfig, cfg.data).validate()
    if "qlora" in experiment:
        assert model.quantization.enabled and model.lora.enabled
        skipped = model.for_family(model_family(model)).quantization.skip_modules
        assert "model.visual" in skipped and "lm_head" in skipped
    if experiment.startswith("qwen"):
        assert model.pretrained.startswith("Qwen/") and model.tiny is None
        assert not model.lora.modules_to_save  # real models: plain LoRA on the LM
        # the shared real-data part (experiment/common/openpack_gpu.yaml) reached every real experiment
        assert cfg.data.name == "openpack" and cfg.trainer.accelerator == "gpu"
        assert (cfg.optim.lr, cfg.dataloader.batch_size, cfg.vram.global_batch_size) == (1e-4, 2, 16)
        optimizer = as_dataclass(OptimConfig, cfg.optim).optimizer_class
        assert optimizer == ("PagedAdamW8bit" if "qlora" in experiment else "AdamW")
        # frames on the family's token grid, and what the family forbids is not configured
        family = model_family(model)
        assert cfg.data.sampler.patch_factor == family.geometry.grid_px
        model.check_family(family)
        assert model.quantization.enabled == ("qlora" in experiment)


@pytest.mark.parametrize("model", MODELS)
def test_model_presets_compose(model):
    cfg = compose_train([f"model={model}", "paths.output_dir=/tmp/x"])
    preset = as_dataclass(ModelConfig, cfg.model)
    preset.validate()
    if model.startswith("qwen"):  # the shared pretrained part (model/common/pretrained_vlm.yaml)
        assert (preset.dtype, preset.gradient_checkpointing, preset.tiny) == ("bfloat16", True, None)
    else:
        assert preset.tiny is not None and preset.tiny.hidden_size == 64
    # every preset names a family we support, from its shipped config or tiny spec: nothing is downloaded
    assert model_family(preset).name in FAMILIES


def test_hparams_search_and_debug_compose():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hparams_search=optuna", "debug=fast_dev_run"], return_hydra_config=True
        )
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "val/f1_macro"
    assert cfg.trainer.fast_dev_run is True


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lora.rank=8", "Key 'rank' not in 'LoraSettings'"),
        ("model.lora.r=eight", "could not be converted to Integer"),
        ("optim.lr=fast", "could not be converted to Float"),
        ("dataloader.batch_sise=4", "Key 'batch_sise' not in 'DataLoaderConfig'"),
    ],
)
def test_typos_and_wrong_types_fail_at_composition(override, message):
    with pytest.raises(ConfigCompositionException) as e:
        compose_train([override])
    assert message in str(e.value.__cause__)


def test_experiment_and_plus_experiment_both_select_an_experiment():
    from vlmchallenge.utils.cli import accept_plus_experiment

    assert compose_train(["experiment=tiny_qlora_cpu"]).model.quantization.enabled
    # Hydra refuses `+experiment=x` next to the `experiment: null` default; the entry points drop the `+`
    with pytest.raises(ConfigCompositionException, match="Multiple values for experiment"):
        compose_train(["+experiment=tiny_qlora_cpu"])
    argv = accept_plus_experiment(["prog", "+experiment=tiny_qlora_cpu", "+callbacks.x=1", "-m"])
    assert argv == ["prog", "experiment=tiny_qlora_cpu", "+callbacks.x=1", "-m"]


def test_lora_lists_stay_plain_for_peft():
    cfg = compose_train([])
    model = as_dataclass(ModelConfig, cfg.model)
    assert type(model.lora.modules_to_save) is list  # a ListConfig would break peft's JSON save (peft#567)
    assert OmegaConf.is_config(cfg.model)


def restated_defaults(defaults, node, prefix: str = "") -> list[str]:
    """The keys of a YAML `node` whose value equals the schema's default (nested settings too): a second
    source of that default, which the two would drift apart from."""
    found = []
    for key in node:
        if key == "defaults" or key not in defaults or OmegaConf.is_interpolation(node, key):
            continue
        if OmegaConf.is_dict(defaults._get_node(key)) and OmegaConf.is_dict(node._get_node(key)):
            found += restated_defaults(defaults[key], node[key], f"{prefix}{key}.")
        elif not OmegaConf.is_missing(defaults, key) and node[key] == defaults[key]:
            found.append(f"{prefix}{key}: {node[key]}")
    return found


def defaulted_parameters(func, names) -> list[str]:
    return [
        f"{func.__qualname__}({p.name}={p.default!r})"
        for p in inspect.signature(func).parameters.values()
        if p.name in names and p.default is not inspect.Parameter.empty
    ]


def test_each_default_of_serve_annotate_review_and_vram_is_stated_once_in_its_schema(tmp_path):
    """The schemas hold the defaults (`ServeSettings`, `AnnotateCommand` with `RecordingOptions` and
    `AnnotateSettings`, `ReviewCommand`, `VRAMConfig`): their YAML states only deltas, and no constructor or
    function that takes those settings gives them defaults of its own."""
    from vlmchallenge.conf_schema import AnnotateCommand, ReviewCommand, ServeCommand
    from vlmchallenge.inference.recordings import RecordingOptions, open_recording
    from vlmchallenge.serving.annotate_api import RecordingAnnotatorAPI
    from vlmchallenge.serving.api import ChatClassifierAPI, ClipClassifierAPI, ExportBackedAPI
    from vlmchallenge.serving.settings import ServeSettings
    from vlmchallenge.training.config import VRAMConfig
    from vlmchallenge.training.vram_callback import VRAMPlanner

    serve, vram = OmegaConf.structured(ServeCommand), OmegaConf.structured(VRAMConfig)
    assert restated_defaults(serve, OmegaConf.load(f"{CONF_DIR}/serve.yaml")) == []
    assert restated_defaults(vram, OmegaConf.load(f"{CONF_DIR}/vram/default.yaml")) == []
    for schema, yaml in [(AnnotateCommand, "annotate.yaml"), (ReviewCommand, "review.yaml")]:
        assert restated_defaults(OmegaConf.structured(schema), OmegaConf.load(f"{CONF_DIR}/{yaml}")) == []
    serve_names = {f.name for f in dataclasses.fields(ServeSettings)} | {"limits", "batch_size"}
    constructors = [ClipClassifierAPI, ChatClassifierAPI, RecordingAnnotatorAPI]
    found = [hit for c in constructors for hit in defaulted_parameters(c.__init__, serve_names)]
    found += defaulted_parameters(ExportBackedAPI.serve_export, serve_names)
    found += defaulted_parameters(VRAMPlanner.__init__, {f.name for f in dataclasses.fields(VRAMConfig)})
    found += defaulted_parameters(open_recording, {f.name for f in dataclasses.fields(RecordingOptions)})
    assert found == []
    # the check itself: a restated nested default and a defaulted parameter are found
    restating = OmegaConf.create({"port": 8000, "limits": {"max_queue_x": 1, "max_frames_per_clip": 64}})
    assert restated_defaults(serve, restating) == ["port: 8000", "limits.max_frames_per_clip: 64"]

    def probe(device="auto"): ...

    assert defaulted_parameters(probe, {"device"}) == [
        "test_each_default_of_serve_annotate_review_and_vram_is_stated_once_in_its_schema.<locals>"
        ".probe(device='auto')"
    ]
