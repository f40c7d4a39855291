"""README.md is executable: every command of its ```bash blocks is run here at tiny size, mapped to the test that
runs it (a node id, checked to exist), or listed with the reason it cannot run on this machine. A command added to
the README that is none of these fails `test_every_readme_command_is_run_or_listed`; so does a listed command
that left the README.

The commands run here are started in this process as `python -m <module> <args>` starts them (`runpy` with
`sys.argv`; `run_as_main`), with the README's arguments, its placeholders (`...`, `<time>`, `/path/to/...`)
replaced by files of the fixtures, and overrides that shrink them appended (a key the README sets keeps the
README's value). A fresh interpreter per command would add ~15 s of imports each and test nothing more.
"""

from __future__ import annotations

import ast
import base64
import csv
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers.in_process import run_as_main
from tests.helpers.runs import CONF_DIR, TINY_TRAIN_OVERRIDES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^[ \t]*```(\w*)[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
PLACEHOLDER = re.compile(r"\.\.\.|<[a-z ]+>|/path/to/")


def canon(command: str) -> str:
    """One spelling per command: shell words without comments, re-quoted (`shlex.join`)."""
    return shlex.join(shlex.split(command, comments=True))


def fenced(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def readme_commands(text: str) -> list[str]:
    """Every command of the ```bash blocks, continuation lines joined, comments dropped, in order."""
    out = []
    for block in fenced(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if shlex.split(line, comments=True):
                out.append(canon(line))
    return out


# ---------------------------------------------------------------- what covers each README command

# Run by another test: README command -> node id (the test file must define that test function).
ELSEWHERE = {
    ".venv/bin/python -m vlmchallenge.prepare": "tests/test_prepare_cli.py::test_cli_end_to_end",
    ".venv/bin/python -m vlmchallenge.train": "tests/test_train.py::test_train_validate_test_export",
    ".venv/bin/python -m vlmchallenge.train experiment=tiny_qlora_cpu": (
        "tests/test_train.py::test_qlora_trains_in_4bit_on_cpu_through_validation"
    ),
    ".venv/bin/python -m vlmchallenge.train ckpt_path=last": (
        "tests/test_training_crash.py::test_sigkill_mid_epoch_resumes_from_the_epoch_checkpoint_to_the_same_result"
    ),
    ".venv/bin/python -m vlmchallenge.vram experiment=qwen2vl_7b_qlora vram.budget_gib=24": (
        "tests/test_vram.py::test_cli_prints_a_plan_without_downloading"
    ),
    ".venv/bin/python -m vlmchallenge.train -m model.lora.r=4,8 optim.lr=1e-3,2e-3": (
        "tests/test_sweeps.py::test_grid_sweep_runs_one_job_per_value"
    ),
    ".venv/bin/python -m vlmchallenge.train hparams_search=optuna": (
        "tests/test_sweeps.py::test_optuna_search_runs_trials_and_reports_the_best"
    ),
    ".venv/bin/python -m vlmchallenge.export ckpt=outputs/train/runs/<time>/checkpoints/epoch_007.ckpt": (
        "tests/test_evaluate_export.py::test_export_cli_gives_the_checkpoints_predictions"
    ),
    ".venv/bin/python -m vlmchallenge.evaluate ckpt=outputs/train/runs/<time>/checkpoints/epoch_007.ckpt": (
        "tests/test_evaluate_export.py::test_a_checkpoint_alone_evaluates_like_its_export_and_takes_overrides"
    ),
    ".venv/bin/python -m vlmchallenge.evaluate export_dir=outputs/train/runs/<time>/export mode=generate": (
        "tests/test_evaluate_export.py::test_generate_mode_counts_invalid_answers"
    ),
    ".venv/bin/python -m vlmchallenge.serve export_dir=outputs/train/runs/<time>/export": (
        "tests/test_serving.py::test_official_openai_client"  # a `python -m vlmchallenge.serve` process
    ),
    # composed from the command (the key from the environment), the /annotate API built from it, the key checked
    "VLMCHALLENGE_API_KEY=s3cret .venv/bin/python -m vlmchallenge.serve export_dir=... host=0.0.0.0 port=8080 "
    "max_batch_size=16": "tests/test_readme_commands.py::test_post_annotate_example_with_every_optional_field",
    # the same request body through the server app
    "curl -s http://127.0.0.1:8000/predict -H 'Content-Type: application/json' "
    '-d "{\\"frames\\": [\\"$(base64 -w0 f1.jpg)\\", \\"$(base64 -w0 f2.jpg)\\"]}"': (
        "tests/test_serving.py::test_health_info_and_predict"
    ),
    ".venv/bin/python -m vlmchallenge.train trainer=ddp trainer.accelerator=cpu trainer.devices=2 "
    "trainer.precision=32": "tests/test_ddp.py::test_two_ranks_score_each_test_clip_once_and_write_one_report",
    ".venv/bin/python -m vlmchallenge.train -m hydra/launcher=submitit_local optim.lr=1e-3,2e-3": (
        "tests/test_launchers.py::test_submitit_local_multirun_runs_both_jobs_to_their_checkpoints"
    ),
    # the evaluator's test stage reading shards and 1-Hz ground truth over http(s)
    ".venv/bin/python -m vlmchallenge.evaluate ckpt=.../epoch_007.ckpt data.shards.out_dir=https://host/openpack-<hash>": (
        "tests/test_remote_shards.py::test_train_and_test_from_a_url_equal_the_local_folder"
    ),
    # run on the synthetic tree: two `data.shard_of` jobs, then the merge command they print
    ".venv/bin/python -m vlmchallenge.prepare data=openpack data.root=/shared/openpack/v1.0.0 "
    "data.shards.out_dir=/shared/shards/openpack data.shard_of=0/2": (
        "tests/test_prepare_distributed.py::test_the_printed_merge_command_merges_the_jobs"
    ),
    ".venv/bin/python -m vlmchallenge.prepare data=openpack data.root=/shared/openpack/v1.0.0 "
    "data.shards.out_dir=/shared/shards/openpack data.shard_of=1/2": (
        "tests/test_prepare_distributed.py::test_the_printed_merge_command_merges_the_jobs"
    ),
    ".venv/bin/python -m vlmchallenge.prepare data=openpack data.root=/shared/openpack/v1.0.0 "
    "data.shards.out_dir=/shared/shards/openpack merge=true": (
        "tests/test_prepare_distributed.py::test_the_printed_merge_command_merges_the_jobs"
    ),
    ".venv/bin/python -m vlmchallenge.annotate export_dir=outputs/train/runs/<time>/export "
    "input=data/synthetic/openpack/v1.0.0 user=U9008 session=S0100": (
        "tests/test_annotate.py::test_cli_annotates_an_openpack_session"
    ),
    ".venv/bin/python -m vlmchallenge.review annotation=outputs/annotate/runs/<time>": (
        "tests/test_review.py::test_the_command_serves_the_page_on_loopback_and_needs_a_key_beyond_it"
    ),
    # annotates first (with export_session added, so that the command ends), exports, then prepares it
    ".venv/bin/python -m vlmchallenge.review export_dir=outputs/train/runs/<time>/export "
    "input=/path/to/openpack/v1.0.0 user=U0209 session=S0500": (
        "tests/test_review.py::test_a_corrected_session_changes_the_next_training_data"
    ),
    ".venv/bin/python -m vlmchallenge.review annotation=outputs/annotate/runs/<time> "
    "export_session=/path/to/reviewed/U0201/S0900": (
        "tests/test_review.py::test_a_corrected_session_changes_the_next_training_data"
    ),
    ".venv/bin/python -m vlmchallenge.prepare data=openpack data.root=/path/to/reviewed": (
        "tests/test_review.py::test_a_corrected_session_changes_the_next_training_data"
    ),
    ".venv/bin/python -m vlmchallenge.train experiment=tiny_qwen3vl_cpu": (
        "tests/test_families_e2e.py::test_the_tiny_family_trains_tests_and_exports"
    ),
    ".venv/bin/python -m vlmchallenge.train experiment=tiny_qwen35_cpu": (
        "tests/test_families_e2e.py::test_the_tiny_family_trains_tests_and_exports"
    ),
    ".venv/bin/python -m vlmchallenge.train experiment=tiny_internvl_cpu": (
        "tests/test_families_e2e.py::test_the_tiny_family_trains_tests_and_exports"
    ),
    ".venv/bin/python -m vlmchallenge.verify shards=data/shards/openpack-<hash>": (
        "tests/test_prepare_reliability.py::test_verify_names_truncated_and_bit_flipped_shards"
    ),
}

REAL_MODEL = "downloads a real checkpoint (GBs) and needs the real OpenPack RGB data"
CUDA = "needs CUDA GPUs (tests/test_gpu.py runs the GPU paths on the tiny model where there is one)"
NOT_HERE = {
    "make train": "the full default run (10 epochs, ~8 min) after installing .venv; its job, "
    "`python -m vlmchallenge.train`, is run by tests/test_train.py",
    "make test": "this test suite",
    "make test-fast": "this test suite without the tests marked slow or drill",
    "make lint": "a style check of the working tree (ruff), not behaviour; it would fail on anyone's work in progress",
    "make bench": "benchmarks: minutes of CPU, their numbers are docs/benchmarks.md's",
    "make gpu-check": CUDA,
    ".venv/bin/python bench/device/bundle.py": "downloads 45 MB of wheels from PyPI; its pins and size check: "
    "tests/test_device_bundle.py",
    "bench/device/rehearse.sh": "fills a 3 GB venv with torch 2.11 (the device's versions); its result is in "
    "docs/gpu-check.md §5",
    "bench/gpu_check.sh --device-image": CUDA,
    ".venv/bin/python -m pytest -m gpu": CUDA,
    ".venv/bin/python -m vlmchallenge.train experiment=qwen2vl_2b_qlora data.root=/path/to/openpack/v1.0.0": REAL_MODEL,
    ".venv/bin/python -m vlmchallenge.train experiment=qwen3vl_4b_lora data.root=/path/to/openpack/v1.0.0": REAL_MODEL,
    ".venv/bin/python -m vlmchallenge.train experiment=qwen35_2b_lora data.root=/path/to/openpack/v1.0.0": REAL_MODEL,
    ".venv/bin/python -m vlmchallenge.train experiment=qwen25vl_3b_lora data.root=... "
    "model.pretrained=/models/Qwen2.5-VL-3B-Instruct": "needs a local copy of the real Qwen2.5-VL-3B and real data",
    ".venv/bin/python -m vlmchallenge.train experiment=qwen2vl_2b_qlora data.root=... vram.global_batch_size=32": (
        REAL_MODEL
    ),
    ".venv/bin/python -m vlmchallenge.train experiment=qwen2vl_2b_qlora data.root=/data/openpack/v1.0.0 trainer=gpu": (
        CUDA
    ),
    ".venv/bin/python -m vlmchallenge.train experiment=qwen2vl_2b_qlora data.root=/data/openpack/v1.0.0 trainer=ddp "
    "trainer.devices=4 vram.global_batch_size=64": "needs 4 GPUs (DDP itself runs on CPU in tests/test_ddp.py)",
    "torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --master_addr=node0 --master_port=29500 -m "
    "vlmchallenge.train experiment=qwen2vl_7b_qlora data.root=/shared/openpack/v1.0.0 trainer=ddp trainer.devices=8 "
    "trainer.num_nodes=2": "needs 2 nodes x 8 GPUs (torchrun on one CPU node: tests/test_ddp.py)",
    "PROJECT_ROOT=$PWD .venv/bin/python -m vlmchallenge.train -m hydra/launcher=slurm experiment=qwen2vl_7b_qlora "
    "data.root=/shared/openpack/v1.0.0 trainer=ddp trainer.devices=8 trainer.num_nodes=2 "
    "hydra.launcher.partition=gpu hydra.launcher.timeout_min=720 optim.lr=1e-4,2e-4": (
        "needs a SLURM cluster (the preset's settings: tests/test_launchers.py)"
    ),
    ".venv/bin/python -m vlmchallenge.train experiment=qwen25vl_3b_lora data.root=... trainer=fsdp trainer.devices=8": (
        CUDA
    ),
    ".venv/bin/python -m vlmchallenge.train experiment=qwen2vl_7b_qlora data.root=... trainer=fsdp "
    "model.dtype=bfloat16": CUDA,
    "pip install -e '.[deepspeed]'": "installs packages from the network",
    ".venv/bin/python -m vlmchallenge.train experiment=qwen2vl_7b_qlora data.root=... trainer=deepspeed_zero2": (
        "needs CUDA and DeepSpeed"
    ),
    "aws s3 sync data/shards/openpack-<hash> s3://bucket/openpack-<hash>": "needs an S3 bucket",
    "pip install -e '.[remote]'": "installs packages from the network",
    ".venv/bin/python -m vlmchallenge.train experiment=qwen2vl_2b_qlora data.root=/data/openpack/v1.0.0 "
    "data.shards.out_dir=s3://bucket/openpack-<hash>": (
        "needs an S3 bucket and a real model (shards over http: tests/test_remote_shards.py)"
    ),
    ".venv/bin/python bench/serve_load.py --export outputs/train/runs/<time>/export": "a load test: minutes",
    ".venv/bin/python bench/vram_validate.py --write": CUDA,
    ".venv/bin/python bench/ddp.py --write": "a DDP benchmark that rewrites docs/benchmarks.md; its runs are "
    "tests/test_ddp.py's",
    ".venv/bin/python bench/drills.py --write": "reruns every fault drill (the tests marked `drill`) and rewrites "
    "docs/reliability.md",
}

# Run here by `test_readme_command_runs`: README command -> the name of its plan and check (class Plans).
HERE = {
    ".venv/bin/python -m vlmchallenge.data.synthetic --root data/synthetic/openpack/v1.0.0 --users 6 "
    "--sessions 1": "synthetic",
    ".venv/bin/python -m vlmchallenge.prepare data=openpack data.root=/path/to/openpack/v1.0.0": "prepare_openpack",
    ".venv/bin/python -m vlmchallenge.prepare data=openpack data.root=/data/openpack/v1.0.0": "prepare_openpack",
    ".venv/bin/python -m vlmchallenge.evaluate export_dir=... data=openpack data.root=/path/to/openpack/v1.0.0 "
    "split=val": "evaluate_openpack_val",
    ".venv/bin/python -m vlmchallenge.train debug=fast_dev_run": "fast_dev_run",
    ".venv/bin/python -m vlmchallenge.train optim.lr=1e-3 dataloader.batch_size=4 trainer.max_epochs=20": "knobs",
    ".venv/bin/python -m vlmchallenge.train -m 'experiment=glob(tiny_*)'": "glob_sweep",
    ".venv/bin/python -m vlmchallenge.vram experiment=qwen25vl_3b_lora vram.budget_gib=80 "
    "vram.global_batch_size=64 vram.chart=vram.png": "vram_chart",
    ".venv/bin/python -m vlmchallenge.annotate export_dir=... input=/path/to/frames/S0500": "annotate_folder",
    ".venv/bin/python -m vlmchallenge.annotate export_dir=... input=recording.mp4 "
    "video_time_origin='2022-03-29 14:25:22+09:00'": "annotate_video",
    ".venv/bin/python -m vlmchallenge.annotate export_dir=... input=... start='2022-03-29 14:30:00+09:00' "
    "end=1648532400000 stride_s=0.5 smoothing.min_segment_s=3 "
    "ground_truth=/path/to/openpack-operations-1hz/S0500.csv out_dir=annotated/": "annotate_part",
    ".venv/bin/python -m vlmchallenge.annotate export_dir=... input=/path/to/frames/S0500 probabilities=false "
    "smoothing.median_s=5": "annotate_labels_only",
}

ELSEWHERE, NOT_HERE, HERE = ({canon(k): v for k, v in d.items()} for d in (ELSEWHERE, NOT_HERE, HERE))


# ---------------------------------------------------------------- the README against the lists (no model)


def test_every_readme_command_is_run_or_listed():
    found = readme_commands(README.read_text())
    listed = [*ELSEWHERE, *NOT_HERE, *HERE]
    assert len(found) >= 50, f"the README parser found only {len(found)} commands"
    assert len(set(listed)) == len(listed), "a command is in two of ELSEWHERE, NOT_HERE and HERE"
    new = sorted(set(found) - set(listed))
    assert not new, (
        "README commands neither run here, nor mapped to a test, nor listed with a reason (add each to HERE, "
        "ELSEWHERE or NOT_HERE in this file, spelled as below):\n" + "\n".join(new)
    )
    gone = sorted(set(listed) - set(found))
    assert not gone, "listed here but no longer in the README:\n" + "\n".join(gone)


def test_the_parser_reads_continuations_quotes_and_comments():
    text = "```bash\n# a comment\nx a=1 \\\n    b='c d'   # trailing\n```\n```python\nnot bash\n```\n"
    assert readme_commands(text) == ["x a=1 'b=c d'"]


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_commands_run_elsewhere_name_tests_that_exist():
    missing = []
    for command, node in ELSEWHERE.items():
        file, *_, name = node.split("::")
        path = ROOT / file
        if not path.is_file() or name.split("[")[0] not in defined_tests(path):
            missing.append(f"{node}  (for: {command})")
    assert not missing, "mapped to tests that do not exist:\n" + "\n".join(missing)


def test_make_targets_named_in_the_readme_exist():
    targets = sorted(
        {shlex.split(c)[1] for c in readme_commands(README.read_text()) if c.startswith("make ")}
    )
    assert {"train", "test", "lint"} <= set(targets)
    for target in targets:
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"


# ---------------------------------------------------------------- running the commands


def localize(command: str, replace: dict[str, str], add: list[str]) -> tuple[str, list[str]]:
    """The README command as (module, args): `key=value` / `--flag value` values in `replace` swapped in (each
    key must be in the command), `add` appended unless the command sets that key already. No placeholder may
    remain."""
    words = shlex.split(command)
    assert words[0] == ".venv/bin/python" and words[1] == "-m", command
    module, args = words[2], words[3:]
    seen = set()
    for i, word in enumerate(args):
        if word.startswith("--") and word in replace:
            args[i + 1] = replace[word]
            seen.add(word)
        elif "=" in word and word.split("=", 1)[0] in replace:
            key = word.split("=", 1)[0]
            args[i] = f"{key}={replace[key]}"
            seen.add(key)
    assert seen == set(replace), f"{command}: not in the command: {set(replace) - seen}"
    keys = {a.split("=", 1)[0] for a in args if "=" in a or a.startswith("--")}
    args += [extra for extra in add if extra.split("=", 1)[0] not in keys]
    left = [a for a in args if PLACEHOLDER.search(a)]
    assert not left, f"{command}: placeholders left: {left}"
    return module, args


@dataclass
class Ctx:
    tmp: Path
    export_dir: Path
    export_meta: dict
    train_data_dir: Path  # the short training tests' data dir (tiny model, small synthetic tree)
    openpack_root: Path  # a synthetic tree with OpenPack's own user ids, as data=openpack reads it
    session_frames: Path  # the two-class run's test session (frames), its 1-Hz file
    session_truth: Path
    clip_frames: Path  # six seconds of that session as a frame folder, and as a video without creation_time
    clip_video: Path
    clip_start_ms: int

    def run_dir(self, name: str) -> Path:
        return self.tmp / "runs" / name


class Plans:
    """`plan_<name>(ctx, run_dir)` -> (replace, add) for `localize`; `check_<name>(ctx, run_dir, log)`."""

    @staticmethod
    def sampler_of_the_export(ctx) -> list[str]:
        s = ctx.export_meta["sampler"]
        return [f"data.sampler.{k}={s[k]}" for k in ("num_frames", "max_pixels", "min_pixels", "crop_top")]

    # -- synthetic data
    def plan_synthetic(self, ctx, run):
        return {"--root": str(run / "openpack" / "v1.0.0"), "--users": "2"}, [
            "--boxes=1",
            "--width=112",
            "--height=84",
            "--workers=1",
        ]

    def check_synthetic(self, ctx, run, log):
        from vlmchallenge.data.openpack_layout import discover_sessions

        refs = discover_sessions(run / "openpack" / "v1.0.0")
        assert sorted(r.key for r in refs) == ["U9001-S0100", "U9002-S0100"]
        assert all(r.operations_1hz_csv is not None for r in refs)

    # -- OpenPack's layout: prepare, then evaluate an export on the val user
    def openpack(self, ctx, run) -> list[str]:
        return [
            *self.sampler_of_the_export(ctx),
            "data.clips.stride_s=4",
            "data.shards.workers=1",
            f"paths.data_dir={ctx.tmp / 'openpack-data'}",
            f"paths.log_dir={ctx.tmp / 'logs'}",
            f"hydra.run.dir={run}",
        ]

    def plan_prepare_openpack(self, ctx, run):
        return {"data.root": str(ctx.openpack_root)}, self.openpack(ctx, run)

    def check_prepare_openpack(self, ctx, run, log):
        summary = json.loads((run / "prepare_summary.json").read_text())
        assert summary["splits"]["val"]["nsamples"] > 0, summary["splits"]

    def plan_evaluate_openpack_val(self, ctx, run):
        replace = {"export_dir": str(ctx.export_dir), "data.root": str(ctx.openpack_root)}
        return replace, [*self.openpack(ctx, run), "dataloader.num_workers=0"]

    def check_evaluate_openpack_val(self, ctx, run, log):
        report = json.loads((run / "report.json").read_text())
        val_users = openpack_splits()["val"]
        assert report["split"] == "val" and report["clips"] > 0
        assert sorted(report["openpack_official"]["per_session"]) == [f"{u}-S0100" for u in val_users]
        assert "shards are from a different" not in log

    # -- training at tiny size
    def train(self, ctx, run) -> list[str]:
        return [
            *TINY_TRAIN_OVERRIDES,
            f"paths.data_dir={ctx.train_data_dir}",
            f"paths.log_dir={run.parent}",
            "debug=fast_dev_run",  # one batch of each stage
        ]

    def plan_fast_dev_run(self, ctx, run):
        return {}, [*self.train(ctx, run), f"hydra.run.dir={run}"]

    def check_fast_dev_run(self, ctx, run, log):
        cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert cfg["trainer"]["fast_dev_run"] is True and cfg["export"] is False
        assert "val/f1_macro" in log and not (run / "export").exists()

    plan_knobs = plan_fast_dev_run

    def check_knobs(self, ctx, run, log):
        cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == 1e-3 and cfg["dataloader"]["batch_size"] == 4
        assert cfg["trainer"]["max_epochs"] == 20 and cfg["trainer"]["fast_dev_run"] is True

    def plan_glob_sweep(self, ctx, run):
        return {}, [*self.train(ctx, run), f"hydra.sweep.dir={run}"]

    def check_glob_sweep(self, ctx, run, log):
        jobs = sorted(p for p in run.iterdir() if p.name.isdigit())
        chosen = sorted(
            o.split("=", 1)[1]
            for j in jobs
            for o in yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text())
            if o.startswith("experiment=")
        )
        assert chosen == sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("tiny_*.yaml"))
        assert len(chosen) >= 2

    # -- VRAM plan with a chart
    def plan_vram_chart(self, ctx, run):
        return {"vram.chart": str(run / "vram.png")}, [f"hydra.run.dir={run}"]

    def check_vram_chart(self, ctx, run, log):
        assert "plan: micro-batch" in log and "global batch 64" in log
        assert (run / "vram.png").stat().st_size > 0

    # -- annotate: a frame folder, a video, a part with every option, labels only
    def plan_annotate_folder(self, ctx, run):
        return {"export_dir": str(ctx.export_dir), "input": str(ctx.clip_frames)}, [f"hydra.run.dir={run}"]

    def check_annotate_folder(self, ctx, run, log):
        meta = json.loads((run / "annotate.json").read_text())
        timeline = read_csv(run / "timeline.csv")
        assert meta["kind"] == "frames" and meta["key"] == "U0000-S0000"
        assert len(timeline) == 6 and {r["status"] for r in timeline} == {"predicted"}
        assert any(k.startswith("p_") for k in timeline[0])

    def plan_annotate_video(self, ctx, run):
        from vlmchallenge.data.jst_time import unix_ms_to_iso

        replace = {
            "export_dir": str(ctx.export_dir),
            "input": str(ctx.clip_video),
            "video_time_origin": unix_ms_to_iso(ctx.clip_start_ms),
        }
        return replace, [f"hydra.run.dir={run}"]

    def check_annotate_video(self, ctx, run, log):
        meta = json.loads((run / "annotate.json").read_text())
        assert meta["kind"] == "video" and meta["range"]["start_ms"] == ctx.clip_start_ms  # origin + PTS 0
        by_video = read_csv(run / "timeline.csv")
        by_folder = read_csv(ctx.run_dir("annotate_folder") / "timeline.csv")
        assert [r["unixtime_ms"] for r in by_video] == [r["unixtime_ms"] for r in by_folder]
        assert {r["status"] for r in by_video} == {"predicted"}

    @staticmethod
    def part_start_ms(ctx) -> int:
        return ctx.clip_start_ms - ctx.clip_start_ms % 1000 + 30_000  # a whole second, 8 s from it

    def plan_annotate_part(self, ctx, run):
        from vlmchallenge.data.jst_time import unix_ms_to_iso

        start = self.part_start_ms(ctx)
        replace = {
            "export_dir": str(ctx.export_dir),
            "input": str(ctx.session_frames),
            "start": unix_ms_to_iso(start),  # an ISO time with offset ...
            "end": str(start + 8000),  # ... and unix ms
            "ground_truth": str(ctx.session_truth),
            "out_dir": str(run / "annotated"),
        }
        return replace, [f"hydra.run.dir={run}"]

    def check_annotate_part(self, ctx, run, log):
        from vlmchallenge.data.jst_time import iso_to_unix_ms

        out = run / "annotated"
        meta = json.loads((out / "annotate.json").read_text())
        timeline = read_csv(out / "timeline.csv")
        start = self.part_start_ms(ctx)
        requested = [iso_to_unix_ms(meta["requested_range"][k]) for k in ("start", "end")]
        assert requested == [start, start + 8000]  # the ISO start and the unix-ms end, both read
        assert [int(r["unixtime_ms"]) for r in timeline] == list(range(start, start + 8000, 1000))
        assert meta["window"]["stride_s"] == 0.5 and meta["windows"] == 2 * len(timeline)  # 2 per second
        assert meta["smoothing"] == {"min_segment_s": 3, "median_s": None}
        assert meta["openpack_official"]["seconds"] > len(timeline)  # scored on the whole 1-Hz file

    def plan_annotate_labels_only(self, ctx, run):
        return {"export_dir": str(ctx.export_dir), "input": str(ctx.clip_frames)}, [f"hydra.run.dir={run}"]

    def check_annotate_labels_only(self, ctx, run, log):
        meta = json.loads((run / "annotate.json").read_text())
        with open(run / "timeline.csv", newline="") as f:
            header = next(csv.reader(f))
        assert header == ["unixtime_ms", "status", "id", "operation", "confidence"]
        assert meta["smoothing"] == {"min_segment_s": None, "median_s": 5}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def openpack_splits() -> dict:
    from hydra import compose, initialize_config_dir

    import vlmchallenge.conf_schema  # noqa: F401  (the data schemas)

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("prepare", overrides=["data=openpack", "data.root=/unused"])
    return {k: list(cfg.data.splits[k]) for k in ("train", "val", "test")}


def write_video(paths: list[str], times_ms: list[int], out: Path) -> Path:
    """An MP4 (H.264, lossless) of the frames at their own times, PTS in ms from the first; no creation_time."""
    import av
    from PIL import Image

    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=1000)
        first = Image.open(paths[0])
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        stream.options = {"crf": "0"}
        for path, t in zip(paths, times_ms, strict=True):
            frame = av.VideoFrame.from_image(Image.open(path).convert("RGB"))
            frame.pts = t - times_ms[0]
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out


@pytest.fixture(scope="module")
def ctx(two_class_run, shared_data_dir, tmp_path_factory) -> Ctx:
    from vlmchallenge.data.frame_source import JpegFolderSource
    from vlmchallenge.data.synthetic import SyntheticConfig, generate

    tmp = tmp_path_factory.mktemp("readme")
    export_dir = Path(two_class_run.objects.export_dir)
    root = Path(two_class_run.cfg.data.root)
    user, session = two_class_run.cfg.data.splits.test[0], two_class_run.cfg.data.synthetic.sessions[0]
    session_frames = root / user / "kinect" / "color-masked" / "frames" / session
    source = JpegFolderSource(session_frames)
    ts = source.timestamps_ms
    start = int(ts[0]) - int(ts[0]) % 1000 + 20_000  # six whole seconds, 20 s into the session
    keep = np.flatnonzero((ts >= start) & (ts < start + 6000))
    clip_frames = tmp / "frames" / session
    for i in keep:
        target = clip_frames / Path(source.paths[i]).relative_to(session_frames)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.paths[i], target)
    video = write_video([source.paths[i] for i in keep], [int(ts[i]) for i in keep], tmp / "recording.mp4")
    # OpenPack's layout with its own ids: the val users of conf/data/openpack.yaml, one small box each
    synthetic = two_class_run.cfg.data.synthetic
    openpack_root = generate(
        SyntheticConfig(
            users=openpack_splits()["val"],
            sessions=["S0100"],
            boxes_per_session=1,
            width=synthetic.width,
            height=synthetic.height,
            seed=7,
        ),
        tmp / "openpack" / "v1.0.0",
        workers=1,
    )
    return Ctx(
        tmp=tmp,
        export_dir=export_dir,
        export_meta=json.loads((export_dir / "vlmchallenge.json").read_text()),
        train_data_dir=shared_data_dir,
        openpack_root=Path(openpack_root),
        session_frames=session_frames,
        session_truth=root / user / "annotation" / "openpack-operations-1hz" / f"{session}.csv",
        clip_frames=clip_frames,
        clip_video=video,
        clip_start_ms=int(ts[keep[0]]),
    )


@pytest.fixture(scope="module")
def ran(ctx) -> dict:
    """Every HERE command, localized, run in README order: command -> (exit status, output, run folder)."""
    import time

    plans = Plans()
    order = [c for c in dict.fromkeys(readme_commands(README.read_text())) if c in HERE]
    out = {}
    for n, command in enumerate(order):
        name = HERE[command]
        run = ctx.run_dir(name if name not in {HERE[c] for c in order[:n]} else f"{name}-{n}")
        replace, add = getattr(plans, f"plan_{name}")(ctx, run)
        module, args = localize(command, replace, add)
        log = ctx.tmp / f"job{n}.log"
        t0 = time.perf_counter()
        rc = run_as_main(module, args, log, ctx.tmp)  # a relative default path lands in tmp, not the checkout
        print(f"{time.perf_counter() - t0:6.1f} s  exit {rc}  {command}")
        out[command] = (rc, log.read_text(), run)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("command", list(HERE), ids=lambda c: HERE[c])
def test_readme_command_runs(ran, ctx, command):
    rc, log, run = ran[command]
    assert rc == 0, f"{command}\nexit {rc}; its output ends:\n{log[-4000:]}"
    getattr(Plans(), f"check_{HERE[command]}")(ctx, run, log)


# ---------------------------------------------------------------- POST /annotate, as the README shows it


@pytest.mark.slow
def test_post_annotate_example_with_every_optional_field(ctx, monkeypatch):
    """The README's `POST /annotate` body, its recording replaced by the fixture's video and its times moved onto
    it, through the `/annotate` API that the README's `VLMCHALLENGE_API_KEY=... serve ...` command configures:
    the key comes from the environment, the request is validated by the endpoint's schema and answered with
    every optional field in effect."""
    from fastapi import HTTPException
    from hydra import compose, initialize_config_dir

    import vlmchallenge.conf_schema  # noqa: F401
    from vlmchallenge.serving.annotate_api import AnnotateRequest, RecordingAnnotatorAPI
    from vlmchallenge.serving.settings import ServeLimits

    text = README.read_text()
    section = text[text.index("## Annotate a recording") :]
    example = json.loads(fenced(section, "json")[0])
    assert {"video", "origin_ms", "start_ms", "end_ms", "window_s", "stride_s", "smoothing"} <= set(example)
    assert set(example["smoothing"]) == {"min_segment_s", "median_s"}

    serve = next(c for c in readme_commands(text) if c.startswith("VLMCHALLENGE_API_KEY="))
    words = shlex.split(serve)
    key = words[0].split("=", 1)[1]
    monkeypatch.setenv("VLMCHALLENGE_API_KEY", key)
    module, overrides = localize(shlex.join(words[1:]), {"export_dir": str(ctx.export_dir)}, ["device=cpu"])
    assert module == "vlmchallenge.serve"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("serve", overrides=overrides)
    assert cfg.api_key == key and cfg.max_batch_size == 16 and cfg.host == "0.0.0.0" and cfg.annotate
    api = RecordingAnnotatorAPI(
        str(cfg.export_dir),
        cfg.device,
        ServeLimits(**cfg.limits),
        cfg.api_key,
        cfg.annotate_batch_size,
        cfg.decode_threads,
    )
    with pytest.raises(HTTPException) as denied:
        api.authorize(x_api_key=None, authorization=None)
    assert denied.value.status_code == 401
    api.authorize(x_api_key=key, authorization=None)
    api.setup("cpu")

    # the example's times, moved onto the video: its origin, and start/end at the same offsets from it
    origin = ctx.clip_start_ms
    body = {
        **example,
        "video": base64.b64encode(ctx.clip_video.read_bytes()).decode(),
        "origin_ms": origin,
        "start_ms": origin + example["start_ms"] - example["origin_ms"],
        "end_ms": origin + example["end_ms"] - example["origin_ms"],
    }
    request = AnnotateRequest.model_validate(body)  # what the endpoint parses the JSON into
    answer = api.encode_response(api.predict(api.decode_request(request))).model_dump()

    start, end = answer["range"]["start_ms"], answer["range"]["end_ms"]
    assert body["start_ms"] <= start < end <= body["end_ms"]
    seconds = [row["unixtime_ms"] for row in answer["timeline"]]
    assert seconds == list(range(start - start % 1000, end, 1000))
    assert answer["windows"] == round(len(seconds) / example["stride_s"])  # stride_s in effect
    assert answer["smoothing"] == example["smoothing"]
    assert sum(s["seconds"] for s in answer["segments"]) == len(seconds)
    assert all(row["status"] == "predicted" and row["id"] is not None for row in answer["timeline"])
