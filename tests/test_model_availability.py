"""Inputs that cannot work fail at once: a model that is neither cached nor downloadable, a folder without
weights, an empty train split (docs/reliability-inputs.md)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.helpers.runs import compose_train
from vlmchallenge.assembly import assemble, settings_from_config
from vlmchallenge.models.availability import (
    PROBE_TIMEOUT_S,
    HubAccess,
    ModelUnavailableError,
    check_model_available,
)
from vlmchallenge.models.config import ModelConfig
from vlmchallenge.models.families import TinyModelSpec, ensure_tiny
from vlmchallenge.utils.input_errors import EmptySplitError
from vlmchallenge.workflows import train

REPO = Path(__file__).resolve().parents[1]
HUB_ID = "Qwen/Qwen2-VL-2B-Instruct"  # the id of conf/model/qwen2vl_2b.yaml


class ConnectionCounter:
    """A TCP endpoint that reads each request's first line, records it and closes the connection without an
    answer: a hub that cannot be reached, whose every attempt is seen. Counting attempts (no retries) states
    "fails at once" without a wall-clock bound that a busy machine could break."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []  # "GET /api/models/..." per connection
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(30)
                with contextlib.suppress(OSError):
                    self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))

    def model_requests(self) -> list[str]:
        """The attempts to reach a model (huggingface_hub's own calls, e.g. /api/agent-harnesses, aside)."""
        return [r for r in self.requests if f"/{HUB_ID}" in r]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def unreachable_hub():
    counter = ConnectionCounter()
    yield counter
    counter.close()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """The tiny model's folder: a complete `save_pretrained` folder (config, weights, processor, tokenizer)."""
    return ensure_tiny(TinyModelSpec(), tmp_path_factory.mktemp("models"))


def hub_model(repo_id: str = HUB_ID) -> ModelConfig:
    return ModelConfig(pretrained=repo_id)


def cache_snapshot(cache: Path, source: Path, names: list[str], repo_id: str = HUB_ID) -> Path:
    """A snapshot of `repo_id` in the hub cache layout (refs/main -> snapshots/<commit>/), as a download leaves
    it (https://huggingface.co/docs/huggingface_hub/guides/manage-cache), holding `names` from `source`."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "1" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in names:
        shutil.copy(source / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def assert_names_the_remedy(message: str, cache: Path) -> None:
    assert f"model.pretrained={HUB_ID}" in message
    assert str(cache) in message  # the cache that was checked
    assert f"`hf download {HUB_ID}`" in message and f"hf download {HUB_ID} --local-dir" in message
    assert "model.pretrained=/local/dir" in message


# ---------------------------------------------------------------- hub ids


def test_uncached_hub_id_offline_fails_at_once(tmp_path, unreachable_hub):
    hub = HubAccess(str(tmp_path / "hub"), offline=True, endpoint=unreachable_hub.url)
    with pytest.raises(ModelUnavailableError) as err:
        check_model_available(hub_model(), hub)
    assert unreachable_hub.requests == []  # offline: not one attempt
    assert_names_the_remedy(str(err.value), tmp_path / "hub")
    assert "HF_HUB_OFFLINE is set" in str(err.value)


def test_uncached_hub_id_with_hub_unreachable_fails_after_one_attempt(tmp_path, unreachable_hub):
    hub = HubAccess(str(tmp_path / "hub"), offline=False, endpoint=unreachable_hub.url)
    with pytest.raises(ModelUnavailableError, match="could not be reached") as err:
        check_model_available(hub_model(), hub)
    assert unreachable_hub.model_requests() == [
        f"GET /api/models/{HUB_ID} HTTP/1.1"
    ]  # one probe (bounded by PROBE_TIMEOUT_S), no retries
    assert_names_the_remedy(str(err.value), tmp_path / "hub")
    assert unreachable_hub.url in str(err.value) and f"within {PROBE_TIMEOUT_S:g} s" in str(err.value)


def test_complete_cached_snapshot_passes_offline(tmp_path, tiny_folder, unreachable_hub):
    snapshot = cache_snapshot(tmp_path, tiny_folder, sorted(p.name for p in tiny_folder.iterdir()))
    hub = HubAccess(str(tmp_path), offline=True, endpoint=unreachable_hub.url)
    assert str(snapshot) in check_model_available(hub_model(), hub)


def test_config_only_snapshot_is_not_cached(tmp_path, tiny_folder, unreachable_hub):
    """`AutoConfig` (e.g. the VRAM planner on an unshipped id) leaves just config.json in the cache."""
    cache_snapshot(tmp_path, tiny_folder, ["config.json"])
    hub = HubAccess(str(tmp_path), offline=True, endpoint=unreachable_hub.url)
    with pytest.raises(ModelUnavailableError, match="lacks weights") as err:
        check_model_available(hub_model(), hub)
    assert_names_the_remedy(str(err.value), tmp_path)


class FakeHub(BaseHTTPRequestHandler):
    """The hub's model-info route answering with `status`; counts requests (the probe must not retry)."""

    status, requests = 200, []

    def do_GET(self):
        type(self).requests.append(self.path)
        body = json.dumps({"id": HUB_ID, "sha": "1" * 40} if self.status == 200 else {"error": "nope"})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        if self.status == 404:  # what the hub sends for an unknown id
            self.send_header("X-Error-Code", "RepoNotFound")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_server():
    FakeHub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    # shutdown() waits for serve_forever's next poll: 0.05 s instead of the default 0.5 s at every teardown
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_reachable_uncached_model_passes_without_downloading(tmp_path, hub_server):
    FakeHub.status = 200
    hub = HubAccess(
        str(tmp_path / "hub"), offline=False, endpoint=f"http://127.0.0.1:{hub_server.server_port}"
    )
    assert "transformers downloads it" in check_model_available(hub_model(), hub)
    assert FakeHub.requests == [f"/api/models/{HUB_ID}"]  # one probe, no file requests
    assert not (tmp_path / "hub").exists()  # nothing downloaded


@pytest.mark.parametrize("status, says", [(404, "has no model"), (503, "answered 503")])
def test_hub_that_refuses_fails_after_one_request(tmp_path, hub_server, status, says):
    FakeHub.status = status
    hub = HubAccess(
        str(tmp_path / "hub"), offline=False, endpoint=f"http://127.0.0.1:{hub_server.server_port}"
    )
    with pytest.raises(ModelUnavailableError, match=says):
        check_model_available(hub_model(), hub)
    assert len(FakeHub.requests) == 1


# ---------------------------------------------------------------- local folders


def test_complete_local_folder_and_tiny_model_pass(tiny_folder):
    assert str(tiny_folder) in check_model_available(ModelConfig(pretrained=str(tiny_folder)))
    assert "tiny" in check_model_available(ModelConfig(tiny=TinyModelSpec()))


def copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst, ignore=lambda _d, files: [f for f in files if f in names])
    return dst


def test_local_folder_without_weights_or_tokenizer_names_what_is_missing(tmp_path, tiny_folder):
    folder = copy_without(
        tiny_folder, tmp_path / "ckpt", "model.safetensors", "tokenizer.json", "tokenizer_config.json"
    )
    with pytest.raises(ModelUnavailableError) as err:
        check_model_available(ModelConfig(pretrained=str(folder)))
    message = str(err.value)
    assert f"model.pretrained={folder}" in message
    assert "weights (model.safetensors or pytorch_model.bin" in message and "a tokenizer" in message
    assert "model config" not in message and "processor config" not in message  # those are there


def test_weight_index_naming_an_absent_shard(tmp_path, tiny_folder):
    folder = copy_without(tiny_folder, tmp_path / "ckpt", "model.safetensors")
    weight_map = {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors",
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(tiny_folder / "model.safetensors", folder / "model-00001-of-00002.safetensors")
    with pytest.raises(ModelUnavailableError, match=r"1 of the 2 weight shards .* model-00002-of-00002"):
        check_model_available(ModelConfig(pretrained=str(folder)))
    shutil.copy(tiny_folder / "model.safetensors", folder / "model-00002-of-00002.safetensors")
    assert str(folder) in check_model_available(ModelConfig(pretrained=str(folder)))


def test_missing_folder_that_is_no_hub_id(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no such folder .* not a hub id"):
        check_model_available(ModelConfig(pretrained=str(tmp_path / "no" / "such" / "ckpt")))


# ---------------------------------------------------------------- the command line


def run_timed(
    cmd: list[str], env: dict, first: str, last: str, timeout: float
) -> tuple[int, str, float, float]:
    """Run `cmd` unbuffered: (exit status, output, seconds from the line containing `first` to the one
    containing `last`, seconds in all). Import time on 2 busy cores varies (15-100 s); what follows does not."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines, seen = [], {}
    try:
        for line in proc.stdout:
            lines.append(line)
            for mark in (first, last):
                if mark in line:
                    seen.setdefault(mark, time.perf_counter())
        rc = proc.wait()
    finally:
        timer.cancel()
    between = seen[last] - seen[first] if first in seen and last in seen else float("inf")
    return rc, "".join(lines), between, time.perf_counter() - t0


@pytest.mark.drill
def test_cli_with_hub_unreachable_fails_after_one_attempt_before_any_data_work(
    tmp_path, unreachable_hub, drill
):
    """The real entry point on the 2B QLoRA experiment, with an empty cache and a hub that cannot be reached: an
    exit with the remedy after one attempt, not transformers' 141 s of retries (docs/reliability-inputs.md §2)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT=unreachable_hub.url, HYDRA_FULL_ERROR="0")
    data_dir = tmp_path / "data"
    cmd = [
        sys.executable,
        "-m",
        "vlmchallenge.train",
        "+experiment=qwen2vl_2b_qlora",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"data.root={tmp_path / 'openpack'}",
    ]
    # "Seed set to 42" is the last line before `assemble` (workflows.train): from there the check alone runs
    rc, out, to_error, wall = run_timed(cmd, env, "Seed set to", "model.pretrained=", timeout=300)
    drill.record(
        fault="model hub unreachable, model not cached",
        injected=1,
        lost=max(len(unreachable_hub.model_requests()) - 1, 0),
        unit="retried requests",
        check=f"requests for the model the hub saw (1 probe allowed); the remedy came {to_error:.1f} s after start-up, "
        f"exit {rc} ({wall:.0f} s with imports); before: 141 s of retries, then an OSError traceback",
    )
    assert rc == 1, out
    assert unreachable_hub.model_requests() == [f"GET /api/models/{HUB_ID} HTTP/1.1"], out
    assert_names_the_remedy(out, tmp_path / "hub")
    assert "could not be reached" in out and "Traceback" not in out and "Retrying" not in out
    assert not data_dir.exists()  # no shards, no synthetic tree, no model folder


# ---------------------------------------------------------------- empty train split


def test_empty_train_list_refuses_before_data_work(tmp_path):
    data_dir = tmp_path / "data"
    cfg = compose_train(tmp_path / "run", data_dir, ["data.splits.train=[]"])
    try:
        with pytest.raises(EmptySplitError, match=r"data.splits.train is empty"):
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert not (data_dir / "shards").exists() and not (data_dir / "synthetic").exists()


def test_train_users_without_recordings_refuse_before_the_model_is_built(tmp_path):
    cfg = compose_train(tmp_path / "run", tmp_path / "data", ["data.splits.train=[U9999]"])
    try:
        parts = assemble(settings_from_config(cfg), "fit", trainer=cfg.trainer, loggers=cfg.get("logger"))
        with pytest.raises(EmptySplitError) as err:
            parts.trainer.fit(parts.module, datamodule=parts.datamodule)
    finally:
        GlobalHydra.instance().clear()
    message = str(err.value)
    assert f"{parts.datamodule.out_dir}/train" in message
    assert "data.splits.train=['U9999']" in message and "U9001-S0100" in message  # a session in no split
    assert parts.module.model is None  # configure_model never ran: no weights loaded
