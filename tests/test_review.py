"""The review page in a real headless Chromium, on a synthetic OpenPack session annotated by the two-class test
model: it draws the annotation, seeks to the frame of the clicked second, finds the unsure stretches, edits by
keyboard within the timeline's rules, saves OpenPack files the parser reads back, keeps unsaved edits over a
reload, and a reviewed recording exported as a session changes what `prepare` writes for the next training run."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from selenium.webdriver.common.keys import Keys

from tests.helpers.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    copy_annotation,
    needs_browser,
    serving,
    start_chromium,
)
from tests.helpers.in_process import run_module
from vlmchallenge.data.annotation_parser import parse_operations_1hz_csv, parse_operations_csv
from vlmchallenge.data.annotation_writer import labels_per_second
from vlmchallenge.data.classes import NULL_ID
from vlmchallenge.data.frame_source import JpegFolderSource
from vlmchallenge.reviewing.app import review_app
from vlmchallenge.reviewing.review_folder import EDIT_LOG, REVIEWED_1HZ_CSV, REVIEWED_CSV, ReviewFolder

USER, SESSION = "U9004", "S0100"  # the two-class run's test user: never trained on
S = 1000


@pytest.fixture(scope="module")
def annotated(two_class_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("review") / "annotation"
    done = run_module(
        "vlmchallenge.annotate",
        f"export_dir={two_class_run.objects.export_dir}",
        f"input={two_class_run.cfg.data.root}",
        f"user={USER}",
        f"session={SESSION}",
        f"out_dir={out}",
        "progress=false",
        f"hydra.run.dir={out.parent / 'run'}",
    )
    assert done.returncode == 0, done.output[-3000:]
    return out


@pytest.fixture
def folder(annotated, tmp_path) -> Path:
    return copy_annotation(annotated, tmp_path)


@pytest.fixture
def site(folder):
    review = ReviewFolder(folder)
    footage = review.open_footage()
    with serving(review_app(review, footage)) as url:
        yield url
    footage.close()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(needs_browser.kwargs["reason"])
    driver = start_chromium()
    yield driver
    driver.quit()


# ---------------------------------------------------------------- what the page shows and does


def open_page(browser, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")  # each test's folder has its own path, so no draft of another test is found
    WebDriverWait(browser, 60).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready"))
    assert browser.find_element("tag name", "body").get_attribute("data-ready") == "1"


def page_segments(browser) -> list[dict]:
    return browser.execute_script(
        "return [...document.querySelectorAll('.seg')].map(e => ({id: +e.dataset.id, "
        "start_ms: +e.dataset.startMs, end_ms: +e.dataset.endMs}))"
    )


def cursor_ms(browser) -> int:
    return int(browser.find_element("id", "time").get_attribute("data-ms"))


def press(browser, *keys: str, ctrl: bool = False, shift: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    chain = ActionChains(browser)
    for modifier, on in ((Keys.CONTROL, ctrl), (Keys.SHIFT, shift)):
        if on:
            chain.key_down(modifier)
    for key in keys:
        chain.send_keys(key)
    for modifier, on in ((Keys.SHIFT, shift), (Keys.CONTROL, ctrl)):
        if on:
            chain.key_up(modifier)
    chain.perform()


def click_second(browser, second: int, seconds: int) -> None:
    """A click on the lanes in the middle of second `second` of a recording `seconds` long (whole-recording zoom:
    the lanes are as wide as the window)."""
    from selenium.webdriver.common.action_chains import ActionChains

    content = browser.find_element("id", "content")
    width = content.rect["width"]
    fits = browser.execute_script(
        "const t = document.getElementById('track'); return t.scrollWidth <= t.clientWidth"
    )
    assert fits, "the whole recording no longer fits the lanes"
    x = (second + 0.5) * width / seconds - width / 2  # Selenium's offsets are from the element's centre
    ActionChains(browser).move_to_element_with_offset(content, round(x), 0).click().perform()


def model_segments(folder: Path, first_ms: int, end_ms: int) -> list[dict]:
    """operations.csv as a full cover of the annotated seconds, Null in the gaps (the page's model)."""
    out, t = [], first_ms
    for s in parse_operations_csv(folder / "operations.csv").segments:
        if s.start_ms > t:
            out.append({"id": NULL_ID, "start_ms": t, "end_ms": s.start_ms})
        out.append({"id": s.op_id, "start_ms": s.start_ms, "end_ms": s.end_ms})
        t = s.end_ms
    if t < end_ms:
        out.append({"id": NULL_ID, "start_ms": t, "end_ms": end_ms})
    return out


def read_timeline(folder: Path) -> list[dict]:
    with open(folder / "timeline.csv", newline="") as f:
        return list(csv.DictReader(f))


def span(folder: Path) -> tuple[int, int]:
    rows = read_timeline(folder)
    return int(rows[0]["unixtime_ms"]), int(rows[-1]["unixtime_ms"]) + S


@needs_browser
def test_the_page_draws_every_segment_and_the_truth(browser, site, folder):
    open_page(browser, site)
    rows = parse_operations_csv(folder / "operations.csv").segments
    drawn = browser.find_elements("css selector", ".seg:not(.null)")
    assert len(drawn) == len(rows) >= 2
    assert [int(e.get_attribute("data-id")) for e in drawn] == [r.op_id for r in rows]
    assert page_segments(browser) == model_segments(folder, *span(folder))
    # the synthetic session has a 1-Hz file: its lanes are shown
    assert browser.find_element("id", "truth-lane").is_displayed()
    assert browser.find_element("id", "status").get_attribute("data-state") == "model"


@needs_browser
def test_clicking_a_second_shows_a_frame_of_that_second(browser, site, folder, two_class_run):
    open_page(browser, site)
    first, end = span(folder)
    frames = JpegFolderSource(
        Path(two_class_run.cfg.data.root) / USER / "kinect" / "color-masked" / "frames" / SESSION
    ).timestamps_ms
    seconds = (end - first) // S
    for second in (3, seconds // 2, seconds - 2):
        click_second(browser, second, seconds)
        t = first + second * S
        assert t <= cursor_ms(browser) < t + S
        image = browser.find_element("id", "frame")
        shown = int(image.get_attribute("data-ms"))
        assert t <= shown < t + S and shown in frames
        assert shown <= cursor_ms(browser) or shown == frames[frames >= t][0]
        loaded = browser.execute_script(
            "const i = document.getElementById('frame'); return i.complete && i.naturalWidth > 0"
        )
        assert loaded or browser.execute_script(
            "return new Promise(r => document.getElementById('frame').onload = () => r(true))"
        )


@needs_browser
def test_next_unsure_visits_the_stretches_below_the_threshold_lowest_included(browser, site, folder):
    open_page(browser, site)
    first, _ = span(folder)
    confidence = np.array([float(r["confidence"]) for r in read_timeline(folder)])

    def stretch_starts(threshold: float) -> list[int]:
        low = confidence < threshold
        return [i for i in range(len(low)) if low[i] and (i == 0 or not low[i - 1])]

    def set_threshold(value: float) -> None:
        box = browser.find_element("id", "threshold")
        browser.execute_script("arguments[0].value = arguments[1]", box, str(value))

    def visits(starts: list[int], presses: int) -> list[int]:
        """Where "next unsure" lands from second 0: the next stretch after the cursor, wrapping around."""
        here, out = 0, []
        for _ in range(presses):
            here = next((i for i in starts if i > here), starts[0])
            out.append(here)
        return out

    def landings(presses: int) -> list[int]:
        press(browser, Keys.HOME)
        out = []
        for _ in range(presses):
            press(browser, "n")
            out.append((cursor_ms(browser) - first) // S)
        return out

    # just above the lowest confidence: the stretch it lands on holds the lowest-confidence second
    lowest = float(confidence.min())
    set_threshold(lowest + 1e-7)
    (landed,) = landings(1)
    assert landed == visits(stretch_starts(lowest + 1e-7), 1)[0] and confidence[landed] == lowest
    assert f"lowest confidence {lowest:.2f}" in browser.find_element("id", "message").text

    # a higher threshold: each press lands on the next stretch in time order, then wraps around
    threshold = float(np.quantile(confidence, 0.5))
    starts = stretch_starts(threshold)
    assert len(starts) >= 2
    set_threshold(threshold)
    assert landings(len(starts) + 1) == visits(starts, len(starts) + 1)


@needs_browser
def test_keyboard_edits_save_openpack_files_that_reload_and_survive_a_restart(browser, site, folder):
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, site)
    first, end = span(folder)
    before = model_segments(folder, first, end)
    k, target = max(
        enumerate(before), key=lambda p: (p[1]["id"] != NULL_ID, p[1]["end_ms"] - p[1]["start_ms"])
    )
    length = (target["end_ms"] - target["start_ms"]) // S
    assert length >= 6
    middle = target["start_ms"] + (length // 2) * S
    click_second(browser, (middle - first) // S, (end - first) // S)
    assert middle <= cursor_ms(browser) < middle + S

    press(browser, "5")  # Close Box
    press(browser, "s")  # split at the cursor's second
    press(browser, "1")  # the second part: Picking
    press(browser, Keys.ARROW_LEFT, Keys.ARROW_LEFT)  # two seconds back, into the first part
    press(browser, "]")  # the first part ends with the cursor's second
    press(browser, "z", ctrl=True)
    press(browser, "z", ctrl=True, shift=True)

    cut = middle - 2 * S + S
    expected = [
        *before[:k],
        {"id": 500, "start_ms": target["start_ms"], "end_ms": cut},
        {"id": 100, "start_ms": cut, "end_ms": target["end_ms"]},
        *before[k + 1 :],
    ]
    assert page_segments(browser) == expected
    assert browser.find_element("id", "status").text == "6 unsaved edits"
    assert not (folder / REVIEWED_CSV).exists()

    press(browser, "s", ctrl=True)
    WebDriverWait(browser, 30).until(
        lambda d: d.find_element("id", "status").get_attribute("data-state") == "saved"
    )
    saved = parse_operations_csv(folder / REVIEWED_CSV)  # the project's own parser, unchanged
    assert (saved.user, saved.session) == (USER, SESSION)
    kept = [s for s in expected if s["id"] != NULL_ID]
    assert [{"id": s.op_id, "start_ms": s.start_ms, "end_ms": s.end_ms} for s in saved.segments] == kept
    hz = parse_operations_1hz_csv(folder / REVIEWED_1HZ_CSV)
    assert hz.unixtime_ms == tuple(range(first, end, S))
    by_second = {t: s["id"] for s in expected for t in range(s["start_ms"], s["end_ms"], S)}
    assert hz.op_ids == tuple(by_second[t] for t in hz.unixtime_ms)

    log = [json.loads(line) for line in (folder / EDIT_LOG).read_text().splitlines()]
    assert [e["action"] for e in log] == ["relabel", "split", "relabel", "move_end", "undo", "redo"]
    assert log[0]["old"] == [before[k]] and log[0]["new"] == [{**before[k], "id": 500}]
    assert all(e["time"] and e["saved_at"] for e in log)

    browser.refresh()  # the saved state, not the model's
    WebDriverWait(browser, 60).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready"))
    assert page_segments(browser) == expected
    assert browser.find_element("id", "status").get_attribute("data-state") == "saved"

    restarted = ReviewFolder(folder)  # a new server on the same folder
    footage = restarted.open_footage()
    with serving(review_app(restarted, footage)) as url:
        state = httpx.get(url + "/api/review").json()
    footage.close()
    assert state["saved"] and state["segments"] == kept and state["edits_saved"] == 6


@needs_browser
def test_unsaved_edits_survive_a_reload(browser, site, folder):
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, site)
    first, end = span(folder)
    click_second(browser, 5, (end - first) // S)
    k = next(
        i for i, s in enumerate(page_segments(browser)) if s["start_ms"] <= cursor_ms(browser) < s["end_ms"]
    )
    label = page_segments(browser)[k]["id"]
    press(browser, "9" if label != 900 else "8")
    edited = page_segments(browser)
    assert edited != model_segments(folder, first, end)

    browser.refresh()  # an accidental reload: the page asks, the person says leave
    WebDriverWait(browser, 60).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready"))
    assert page_segments(browser) == edited
    assert browser.find_element("id", "message").text == "restored 1 unsaved edits"
    assert browser.find_element("id", "status").get_attribute("data-state") == "unsaved"
    assert not (folder / REVIEWED_CSV).exists()


@needs_browser
def test_an_edit_that_breaks_a_rule_is_refused_with_a_reason(browser, site, folder):
    open_page(browser, site)
    first, end = span(folder)
    before = page_segments(browser)
    press(browser, Keys.HOME)  # the first second
    press(browser, "[")
    assert "the first segment starts where the recording does" in browser.find_element("id", "message").text
    press(browser, "s")  # at a segment's first second: nothing to split
    assert "split inside a segment" in browser.find_element("id", "message").text
    press(browser, "M")  # no previous neighbour
    assert "no neighbour" in browser.find_element("id", "message").text
    assert page_segments(browser) == before
    press(browser, "m")  # merge with the next: one segment, the first one's label
    merged = page_segments(browser)
    assert merged[0] == {"id": before[0]["id"], "start_ms": first, "end_ms": before[1]["end_ms"]}
    assert merged[1:] == before[2:]


@needs_browser
def test_seconds_without_frames_show_as_such_and_zoom_reaches_single_seconds(
    browser, two_class_run, tmp_path
):
    """A JPEG folder with 5 s of frames removed and no 1-Hz file: the gap is marked, the frame is not borrowed,
    and the truth lanes are not drawn."""
    source = JpegFolderSource(
        Path(two_class_run.cfg.data.root) / USER / "kinect/color-masked/frames" / SESSION
    )
    first = int(source.timestamps_ms[0]) // S * S + 10 * S
    gap = (first + 10 * S, first + 15 * S)
    frames = tmp_path / "frames"
    for t, p in zip(source.timestamps_ms.tolist(), source.paths, strict=True):
        if first <= t < first + 60 * S and not gap[0] <= t < gap[1]:
            (frames / Path(p).relative_to(source.root)).parent.mkdir(parents=True, exist_ok=True)
            (frames / Path(p).relative_to(source.root)).hardlink_to(p)
    out = tmp_path / "annotation"
    done = run_module(
        "vlmchallenge.annotate", f"export_dir={two_class_run.objects.export_dir}", f"input={frames}",
        f"out_dir={out}", "progress=false", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert done.returncode == 0, done.output[-3000:]
    review = ReviewFolder(out)
    footage = review.open_footage()
    with serving(review_app(review, footage)) as url:
        open_page(browser, url)
        seconds = len(review.seconds)
        gap_second = (gap[0] - review.seconds[0].unixtime_ms) // S + 2
        click_second(browser, gap_second, seconds)
        assert browser.find_element("id", "no-frame").is_displayed()
        assert not browser.find_element("id", "frame").is_displayed()
        assert browser.find_element("id", "current-confidence").text == "no prediction"
        marked = browser.execute_script(
            "const c = document.getElementById('gaps-lane'); const w = c.width / arguments[1];"
            "return [arguments[0], 2].map(s => [...c.getContext('2d').getImageData(Math.floor((s + 0.5) * w), 2, 1, 1)"
            ".data].join(','))",
            gap_second,
            seconds,
        )
        assert marked == ["122,31,31,255", "0,0,0,0"]  # the no-frames colour (#7a1f1f) in the gap only
        assert not browser.find_element("id", "truth-lane").is_displayed()

        whole = browser.find_element("id", "content").rect["width"]
        press(browser, *"+" * 8)  # zoom in until one second is wider than 40 px
        per_second = browser.find_element("id", "content").rect["width"] / seconds
        assert per_second >= 40 > whole / seconds
        assert gap[0] <= cursor_ms(browser) < gap[1]  # the cursor stays where it was
        press(browser, "*")
        assert browser.find_element("id", "content").rect["width"] == pytest.approx(whole, abs=1)
    footage.close()


def test_a_save_that_breaks_a_rule_is_refused_naming_the_field(folder):
    review = ReviewFolder(folder)
    footage = review.open_footage()
    first, end = span(folder)
    bad = {
        "segments[1].start_ms": [
            {"id": 100, "start_ms": first, "end_ms": first + 3 * S},
            {"id": 200, "start_ms": first + 2 * S, "end_ms": first + 4 * S},
        ],
        "segments[0].id": [{"id": 123, "start_ms": first, "end_ms": first + S}],
        "segments[0].end_ms": [{"id": 100, "start_ms": first, "end_ms": first + 1500}],
        "segments[0]: expected a segment inside": [{"id": 100, "start_ms": first, "end_ms": end + S}],
    }
    with serving(review_app(review, footage)) as url:
        for field, segments in bad.items():
            answer = httpx.post(url + "/api/save", json={"segments": segments, "edits": []})
            assert answer.status_code == 422 and field in answer.json()["detail"], (field, answer.text)
        broken = httpx.post(
            url + "/api/save", content=b'{"segments": [', headers={"content-type": "application/json"}
        )
        assert broken.status_code == 422 and "body: not JSON" in broken.json()["detail"], broken.text
        whole = [{"id": 100, "start_ms": first, "end_ms": end}]
        ok = httpx.post(url + "/api/save", json={"segments": whole, "edits": [{}], "edits_saved": 0})
        assert ok.status_code == 200
        assert ok.json()["edits_saved"] == 1
        # a second page that loaded before that save: refused, not a silent overwrite
        stale = httpx.post(url + "/api/save", json={"segments": whole[:0], "edits": [], "edits_saved": 0})
        assert stale.status_code == 409 and "saved by another page" in stale.json()["detail"]
    footage.close()
    assert [s.op_id for s in parse_operations_csv(folder / REVIEWED_CSV).segments] == [100]


# ---------------------------------------------------------------- the command and the way back into training


def test_the_command_serves_the_page_on_loopback_and_needs_a_key_beyond_it(annotated, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmchallenge.review", f"annotation={annotated}", "port=0",
         f"hydra.run.dir={tmp_path / 'run'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # the URL, printed once the socket is bound
        while line and not line.startswith("review "):
            line = proc.stdout.readline()
        url = line.split(": ", 1)[1].strip().rstrip("/")
        assert url.startswith("http://127.0.0.1:"), line
        page = httpx.get(url + "/", timeout=60)
        assert page.status_code == 200 and "review.js" in page.text
        assert httpx.get(url + "/api/review", timeout=60).json()["key"] == f"{USER}-{SESSION}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    done = run_module("vlmchallenge.review", f"annotation={annotated}", "host=0.0.0.0", "api_key=null",
                      f"hydra.run.dir={tmp_path / 'run2'}")  # fmt: skip
    assert done.returncode != 0 and "host=0.0.0.0: the review page saves files" in done.output
    with socket.create_server(("127.0.0.1", 0)) as busy:  # a port someone else holds: a clear error
        port = busy.getsockname()[1]
        done = run_module("vlmchallenge.review", f"annotation={annotated}", f"port={port}",
                          f"hydra.run.dir={tmp_path / 'run3'}")  # fmt: skip
    assert done.returncode != 0 and f"port={port}: cannot listen there" in done.output

    review = ReviewFolder(annotated)
    footage = review.open_footage()
    with serving(review_app(review, footage, api_key="s3cret")) as url:
        assert httpx.get(url + "/api/review").status_code == 401
        assert httpx.get(url + "/api/review", headers={"X-API-Key": "s3cret"}).status_code == 200
        with httpx.Client(base_url=url, follow_redirects=True) as client:
            assert (
                client.get("/?key=s3cret").status_code == 200
            )  # sets the cookie, drops the key from the URL
            assert client.get("/api/review").status_code == 200
    footage.close()


def prepare_counts(root: Path, data_dir: Path, run_dir: Path) -> dict:
    done = run_module(
        "vlmchallenge.prepare", "data=openpack", f"data.root={root}", f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert done.returncode == 0, done.output[-3000:]
    (manifest,) = data_dir.glob("shards/openpack-*/manifest.json")
    return json.loads(manifest.read_text())["splits"]["train"]["class_counts"]


def test_a_corrected_session_changes_the_next_training_data(two_class_run, folder, tmp_path):
    root = tmp_path / "openpack"
    target = root / "U0201" / "S0100"  # a train user of the default OpenPack splits
    done = run_module(  # annotate first, then export: the model's labels, not reviewed
        "vlmchallenge.review", f"export_dir={two_class_run.objects.export_dir}",
        f"input={two_class_run.cfg.data.root}", f"user={USER}", f"session={SESSION}", "progress=false",
        f"out_dir={tmp_path / 'fresh'}", f"export_session={target}", f"hydra.run.dir={tmp_path / 'r1'}",
    )  # fmt: skip
    assert done.returncode == 0, done.output[-3000:]
    assert "not reviewed" in done.output and f"data.root={root}" in done.output
    model_counts = prepare_counts(root, tmp_path / "data", tmp_path / "p1")

    # the reviewer relabels the longest segment as Close Box (500), which the model never predicted
    review = ReviewFolder(folder)
    rows = review.segments()
    longest = max(range(len(rows)), key=lambda i: rows[i].end_ms - rows[i].start_ms)
    assert 500 not in {r.op_id for r in rows}
    rows[longest] = type(rows[longest])(500, rows[longest].start_ms, rows[longest].end_ms)
    review.save(rows, [{"action": "relabel"}])
    done = run_module("vlmchallenge.review", f"annotation={folder}", f"export_session={target}",
                      f"hydra.run.dir={tmp_path / 'r2'}")  # fmt: skip
    assert done.returncode == 0 and "(reviewed)" in done.output, done.output[-3000:]

    exported = parse_operations_csv(root / "U0201/annotation/openpack-operations/S0100.csv")
    assert [(s.op_id, s.start_ms, s.end_ms) for s in exported.segments] == [
        (r.op_id, r.start_ms, r.end_ms) for r in rows
    ]
    hz = parse_operations_1hz_csv(root / "U0201/annotation/openpack-operations-1hz/S0100.csv")
    assert hz.op_ids == tuple(i for _, i in labels_per_second(rows, hz.unixtime_ms))
    frames = sorted((root / "U0201/kinect/color-masked/frames/S0100").rglob("*.jpg"))
    source = JpegFolderSource(
        Path(two_class_run.cfg.data.root) / USER / "kinect/color-masked/frames" / SESSION
    )
    first, end = span(folder)
    assert len(frames) == int(((source.timestamps_ms >= first) & (source.timestamps_ms < end)).sum())
    assert frames[0].stat().st_ino in {Path(p).stat().st_ino for p in source.paths}  # hard-linked, not copied

    reviewed_counts = prepare_counts(root, tmp_path / "data", tmp_path / "p2")
    assert model_counts["Close Box"] == 0 < reviewed_counts["Close Box"]
    assert sum(model_counts.values()) == sum(reviewed_counts.values())  # same clips, corrected labels
