"""The Hydra entry point: config composition, schema validation and a real end-to-end run."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

import vlmchallenge.conf_schema  # noqa: F401
from tests.helpers.in_process import run_module
from tests.helpers.runs import CONF_DIR, SMALL_DATA_OVERRIDES
from vlmchallenge.data.config import DataConfig


def compose_prepare(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("prepare", overrides=overrides)


@pytest.mark.parametrize("data", ["synthetic", "openpack"])
def test_data_configs_compose_into_the_schema(data):
    overrides = [f"data={data}"] + (["data.root=/some/openpack/v1.0.0"] if data == "openpack" else [])
    cfg = compose_prepare(overrides)
    obj = OmegaConf.to_object(cfg.data)
    assert isinstance(obj, DataConfig)
    obj.validate()
    if data == "openpack":
        assert obj.synthetic is None and obj.sampler.num_frames == 8
        assert obj.splits.user_to_split()["U0210"] == "train"


def test_typos_and_wrong_types_fail_at_composition():
    with pytest.raises(ConfigCompositionException) as e:
        compose_prepare(["data.sampler.num_frmes=8"])
    assert "Key 'num_frmes' not in 'SamplerConfig'" in str(e.value.__cause__)
    with pytest.raises(ConfigCompositionException) as e:
        compose_prepare(["data.sampler.num_frames=eight"])
    assert "Value 'eight' of type 'str' could not be converted to Integer" in str(e.value.__cause__)


def test_openpack_requires_a_root():
    with pytest.raises(MissingMandatoryValue, match="data.root"):
        OmegaConf.to_object(compose_prepare(["data=openpack"]).data)
    with pytest.raises(ValueError, match="data.root is required"):
        DataConfig().validate()


def test_cli_end_to_end(tmp_path):
    cmd = [
        "vlmchallenge.prepare",
        f"paths.data_dir={tmp_path}/data",
        f"paths.log_dir={tmp_path}/outputs",
        *SMALL_DATA_OVERRIDES,
    ]
    run = run_module(*cmd)
    assert run.returncode == 0, run.output[-3000:]
    assert "Clips per split and class" in run.output
    manifests = list((tmp_path / "data" / "shards").glob("synthetic-*/manifest.json"))
    assert len(manifests) == 1
    summary = next((tmp_path / "outputs" / "prepare" / "runs").glob("*/prepare_summary.json"))
    s = json.loads(summary.read_text())
    assert (
        s["splits"]["train"]["nsamples"]
        == json.loads(manifests[0].read_text())["splits"]["train"]["nsamples"]
    )
    assert s["throughput"]["clips_written"] > 0
    # a bad annotation file: clear error naming file and line, non-zero exit, no traceback soup needed to find it
    csv = tmp_path / "data/synthetic/openpack/v1.0.0/U9002/annotation/openpack-operations/S0100.csv"
    lines = csv.read_text().splitlines()
    lines[3] = lines[3].replace(",Assemble Box,", ",Assemble Boxes,")
    csv.write_text("\n".join(lines) + "\n")
    run = run_module(*cmd, "data.shards.overwrite=true")
    assert run.returncode != 0
    assert f"{csv}:4: field 'operation'" in run.output
