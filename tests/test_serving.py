"""Serving: in-process (TestClient) and a real server on loopback, the official `openai` client, the bad-input
suite, API keys, and schemathesis against the OpenAPI schema (no 5xx)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from hydra.core.global_hydra import GlobalHydra
from litserve.utils import wrap_litserve_start
from omegaconf import OmegaConf
from PIL import Image

from tests.conftest import CONF_DIR, compose_train
from vlmchallenge.serve import build_server
from vlmchallenge.serving.inference import VLMInference


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory, shared_data_dir):
    from vlmchallenge.train import train

    out = tmp_path_factory.mktemp("serve") / "train" / "runs" / "s"
    cfg = compose_train(out, shared_data_dir, ["test=false"])
    _, objects = train(cfg)
    GlobalHydra.instance().clear()
    return objects["export_dir"]


@pytest.fixture(scope="module")
def frames_b64(shared_data_dir):
    root = (
        shared_data_dir / "synthetic" / "openpack" / "v1.0.0" / "U9003" / "kinect" / "color-masked" / "frames"
    )
    paths = sorted(root.rglob("*.jpg"))[100:116]
    return [base64.b64encode(p.read_bytes()).decode() for p in paths]


def png_b64(color=(10, 20, 30), size=(112, 84)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def serve_cfg(export_dir, **over):
    cfg = OmegaConf.load(f"{CONF_DIR}/serve.yaml")
    cfg.export_dir, cfg.device, cfg.api_key = str(export_dir), "cpu", None
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def wait_healthy(get, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if get("/health") == 200:
            return
        time.sleep(0.3)
    raise TimeoutError("server never became healthy")


@pytest.fixture(scope="module")
def client(export_dir):
    with wrap_litserve_start(build_server(serve_cfg(export_dir))) as server, TestClient(server.app) as c:
        wait_healthy(lambda p: c.get(p).status_code)
        yield c


def test_inference_matches_the_sampler_and_prompt_of_training(export_dir, frames_b64):
    engine = VLMInference(export_dir, device="cpu")
    images = [Image.open(io.BytesIO(base64.b64decode(f))) for f in frames_b64]
    clip = engine.prepare(images)
    w, h = engine.sampler.output_size(*images[0].size)
    assert clip.shape == (4, h, w, 3)  # the training geometry: 4 frames, band cropped, on the 28-px grid
    assert (w, h) == (84, 56)
    result = engine.predict(images)
    assert result["label"] in engine.prompt.class_names and result["id"] in engine.class_ids
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    batch = engine.predict_batch([clip, clip])
    assert batch[0]["label"] == batch[1]["label"] == result["label"]


def test_health_info_and_predict(client, frames_b64):
    assert client.get("/health").text == "ok"
    info = client.get("/info").json()["model"]
    assert [c["id"] for c in info["classes"]][:3] == [100, 200, 300]
    r = client.post("/predict", json={"frames": frames_b64})
    assert r.status_code == 200
    pred = r.json()["prediction"]
    assert pred["label"] in [c["name"] for c in info["classes"]] and len(pred["probabilities"]) == 10
    many = client.post(
        "/predict", json={"clips": [{"frames": frames_b64[:8]}, {"frames": frames_b64[8:]}], "top_k": 3}
    )
    assert many.status_code == 200
    assert [len(p["probabilities"]) for p in many.json()["predictions"]] == [3, 3]


def test_video_input(client, frames_b64, tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=15)
        stream.width, stream.height, stream.pix_fmt = 112, 64, "yuv420p"
        for f in frames_b64:
            frame = av.VideoFrame.from_image(Image.open(io.BytesIO(base64.b64decode(f))).convert("RGB"))
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    r = client.post("/predict", json={"video": base64.b64encode(path.read_bytes()).decode()})
    assert r.status_code == 200, r.text


BAD = [
    ({"frames": []}, "at least one frame"),
    ({"frames": ["!!!not base64"]}, "invalid base64"),
    ({"frames": [base64.b64encode(b"plain text, not an image").decode()]}, "not a decodable JPEG/PNG"),
    ({"frames": "abc"}, "valid list"),
    ({"frames": [1, 2]}, "valid string"),
    ({"frames": None, "video": None}, "exactly one of"),
    ({"video": base64.b64encode(b"not a video").decode()}, "not a decodable video"),
    ({"frames": [png_b64()] * 65}, "at most 64 per clip"),
    ({"frames": [png_b64(size=(112, 84)), png_b64(size=(84, 112))]}, "same size"),
    ({"frames": [png_b64(size=(2000, 1200))]}, "pixels per frame"),
    ({"clips": []}, "'clips' is empty"),
    ({"clips": [{"frames": [png_b64()]}] * 17}, "at most 16 per request"),
    ({"clips": [{"frames": [png_b64()]}], "frames": [png_b64()]}, "not both"),
    ({"unexpected": 1}, "Extra inputs"),
    ({"frames": [png_b64()], "top_k": 0}, "greater than or equal to 1"),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_is_a_clear_4xx_and_the_server_stays_healthy(client, body, message):
    r = client.post("/predict", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert message in r.text
    assert client.get("/health").status_code == 200


def test_invalid_json_and_oversize_payload(export_dir):
    cfg = serve_cfg(export_dir, max_payload_mb=0.05, openai=False)
    with wrap_litserve_start(build_server(cfg)) as server, TestClient(server.app) as c:
        wait_healthy(lambda p: c.get(p).status_code)
        r = c.post("/predict", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "JSON" in r.text
        import numpy as np

        noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
        buf = io.BytesIO()
        noise.save(buf, format="PNG")  # incompressible: ~360 KB, over the 50 KB limit
        r = c.post("/predict", json={"frames": [base64.b64encode(buf.getvalue()).decode()]})
        assert r.status_code == 413


def test_api_key(export_dir, frames_b64):
    with (
        wrap_litserve_start(build_server(serve_cfg(export_dir, api_key="s3cret"))) as server,
        TestClient(server.app) as c,
    ):
        wait_healthy(lambda p: c.get(p).status_code)
        body = {"frames": frames_b64[:4]}
        assert c.post("/predict", json=body).status_code == 401
        assert c.post("/predict", json=body, headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/predict", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/predict", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200


# ---------------------------------------------------------------- a real server on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(export_dir, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vlmchallenge.serve",
                f"export_dir={export_dir}",
                f"port={port}",
                "device=cpu",
                "api_key=k3y",
                f"hydra.run.dir={log.parent}",
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"

    def status(path):
        try:
            return urllib.request.urlopen(base + path, timeout=2).status
        except Exception:
            return None

    try:
        wait_healthy(status, timeout=180)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        assert "Traceback" not in log.read_text() or proc.returncode is not None


def post(base, path, body, key="k3y"):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_live_server_concurrent_requests_are_batched_and_correct(live_server, frames_b64):
    single = post(live_server, "/predict", {"frames": frames_b64})[1]["prediction"]["label"]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(live_server, "/predict", {"frames": frames_b64}), range(16)))
    assert all(code == 200 for code, _ in results)
    assert {r["prediction"]["label"] for _, r in results} == {single}  # batching does not change answers
    assert post(live_server, "/predict", {"frames": frames_b64}, key="nope")[0] == 401


def test_official_openai_client(live_server, frames_b64):
    from openai import OpenAI

    client = OpenAI(base_url=live_server + "/v1", api_key="k3y")
    content = [{"type": "text", "text": "Which packaging operation is this?"}] + [
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{f}"}} for f in frames_b64
    ]
    reply = client.chat.completions.create(
        model="vlmchallenge", messages=[{"role": "user", "content": content}]
    )
    label = reply.choices[0].message.content
    assert label == post(live_server, "/predict", {"frames": frames_b64})[1]["prediction"]["label"]
    with pytest.raises(Exception, match="422"):
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "no frames"}])


def test_schemathesis_finds_no_server_errors(live_server):
    proc = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "schemathesis"),
            "run",
            f"{live_server}/openapi.json",
            "--checks",
            "not_a_server_error",
            "-n",
            "30",
            "-H",
            "X-API-Key: k3y",
            "--request-timeout",
            "20",
            "--generation-deterministic",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
