// The review page: the recording's frames above, the model's timeline and its confidence (and the ground truth
// when there is one) below on one time axis; seek, zoom, jump to the next unsure stretch, correct by keyboard,
// save. Plain ES modules served as files: no node, no build step.
import { cover, check, indexAt, relabel, moveStart, moveEnd, split, merge, History, EditError, NULL_ID, SECOND }
  from "./timeline.js";
import { colourOf, drawStrips } from "./ribbons.js";

const $ = (id) => document.getElementById(id);
const MAX_PPS = 60; // pixels per second at the closest zoom
const state = { t: 0, pps: 1, whole: true, playing: false, frameIndex: -1 };
let data, first, end, seconds, known, history, draftKey, draftBase;

async function load() {
  const response = await fetch("/api/review");
  if (!response.ok) throw new Error(`GET /api/review: ${response.status}`);
  data = await response.json();
  first = data.first_ms;
  seconds = data.status.length;
  end = first + seconds * SECOND;
  known = new Set(data.classes.map((c) => c.id));
  draftKey = `vlmchallenge-review:${data.annotation}`;
  draftBase = `${data.saved}/${data.edits_saved}`;
  history = new History(check(cover(data.segments, first, end), first, end, known));
  restoreDraft();
  $("title").textContent = data.key;
  $("model").textContent = data.model ? `model: ${data.model.base_model ?? data.model.export_dir}` : "";
  document.querySelectorAll(".truth-only").forEach((e) => (e.hidden = data.truth === null));
  buildLegend();
  state.pps = fitPps();
  state.t = first;
  render();
  document.body.dataset.ready = "1";
}

// Unsaved edits live in localStorage until saved, so a reload (or a crash) does not lose them.
function restoreDraft() {
  const draft = JSON.parse(localStorage.getItem(draftKey) || "null");
  if (!draft || draft.base !== draftBase) return;
  try {
    history = new History(check(draft.segments, first, end, known));
    history.log = draft.log;
    say(`restored ${draft.log.length} unsaved edits`);
  } catch (e) {
    localStorage.removeItem(draftKey);
  }
}

function keepDraft() {
  localStorage.setItem(draftKey, JSON.stringify({ base: draftBase, segments: history.current, log: history.log }));
  setStatus();
}

const dirty = () => history.log.length > 0;

function setStatus() {
  const s = $("status");
  s.dataset.state = dirty() ? "unsaved" : data.saved ? "saved" : "model";
  s.textContent = dirty() ? `${history.log.length} unsaved edits` : data.saved ? "saved" : "model output, not reviewed";
}

function say(text) {
  $("message").textContent = text;
}

function buildLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  for (const c of data.classes) {
    const b = document.createElement("button");
    const key = c.id === NULL_ID ? "Del" : String((c.index + 1) % 10);
    b.className = "class";
    b.dataset.id = c.id;
    b.innerHTML = `<kbd>${key}</kbd> <i style="background:${colourOf(c.id)}"></i> ${c.name}`;
    b.addEventListener("click", () => edit("relabel", (segs, k) => relabel(segs, k, c.id), { id: c.id }));
    legend.append(b);
  }
}

// ------------------------------------------------------------------ drawing

const fitPps = () => Math.max($("track").clientWidth / seconds, 0.05);

function render() {
  const content = $("content");
  content.style.width = `${seconds * state.pps}px`;
  const lane = $("segments");
  lane.replaceChildren();
  const current = indexAt(history.current, state.t);
  history.current.forEach((s, k) => {
    const div = document.createElement("div");
    const c = data.classes.find((x) => x.id === s.id);
    div.className = `seg${s.id === NULL_ID ? " null" : ""}${k === current ? " selected" : ""}`;
    Object.assign(div.dataset, { index: k, id: s.id, startMs: s.start_ms, endMs: s.end_ms });
    div.style.left = `${((s.start_ms - first) / SECOND) * state.pps}px`;
    div.style.width = `${((s.end_ms - s.start_ms) / SECOND) * state.pps}px`;
    div.style.background = s.id === NULL_ID ? "" : colourOf(s.id);
    div.title = `${c.name}: ${clock(s.start_ms)} – ${clock(s.end_ms)}`;
    div.textContent = c.name;
    lane.append(div);
  });
  drawAll();
  setStatus();
}

function drawAll() {
  drawStrips({ track: $("track"), data, pps: state.pps, segments: history.current, first });
  const x = ((state.t - first) / SECOND) * state.pps;
  $("cursor").style.left = `${x}px`;
  const k = indexAt(history.current, state.t);
  const seg = history.current[k];
  $("time").textContent = clock(state.t);
  $("time").dataset.ms = state.t;
  $("current-label").textContent = data.classes.find((c) => c.id === seg.id).name;
  const i = Math.floor((state.t - first) / SECOND);
  const conf = data.confidence[i];
  $("current-confidence").textContent = conf === null ? "no prediction" : `confidence ${conf.toFixed(2)}`;
  document.querySelectorAll(".seg.selected").forEach((e) => e.classList.remove("selected"));
  document.querySelector(`.seg[data-index="${k}"]`)?.classList.add("selected");
  showFrame();
}

function clock(ms) {
  const jst = new Date(ms + 9 * 3600 * SECOND); // OpenPack's clock is JST
  return jst.toISOString().slice(11, 19);
}

// The frame of the second under the cursor: the latest one not after the cursor, within that second; none when
// the second holds no frame (it is not borrowed from a neighbouring second).
function frameIndexAt(t) {
  const f = data.frames_ms;
  const sec = t - (t % SECOND);
  const lo = lowerBound(f, sec), hi = lowerBound(f, sec + SECOND);
  if (lo === hi) return -1;
  return Math.min(Math.max(lowerBound(f, t + 1) - 1, lo), hi - 1);
}

function lowerBound(a, x) {
  let lo = 0, hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid] < x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

function showFrame() {
  const index = frameIndexAt(state.t);
  $("no-frame").hidden = index >= 0;
  $("frame").hidden = index < 0;
  if (index === state.frameIndex) return;
  state.frameIndex = index;
  if (index < 0) return;
  $("frame").src = `/api/frames/${index}`;
  $("frame").dataset.index = index;
  $("frame").dataset.ms = data.frames_ms[index];
}

// ------------------------------------------------------------------ time

function seek(t, { follow = true } = {}) {
  state.t = Math.min(Math.max(Math.round(t), first), end - 1);
  if (follow) keepInView();
  drawAll();
}

function keepInView() {
  const track = $("track");
  const x = ((state.t - first) / SECOND) * state.pps;
  if (x < track.scrollLeft || x > track.scrollLeft + track.clientWidth - 20) {
    track.scrollLeft = Math.max(0, x - track.clientWidth / 3);
  }
}

// factor 0: the whole recording, which stays whole when the lanes change width (a window resized, a scrollbar).
function zoom(factor) {
  const pps = factor === 0 || (factor === 1 && state.whole) ? fitPps() : Math.min(Math.max(state.pps * factor, fitPps()), MAX_PPS);
  state.whole = pps === fitPps();
  state.pps = pps;
  render();
  const track = $("track");
  track.scrollLeft = Math.max(0, ((state.t - first) / SECOND) * pps - track.clientWidth / 2);
  drawAll();
}

function togglePlay() {
  state.playing = !state.playing;
  $("play").textContent = state.playing ? "Pause" : "Play";
  let last = performance.now();
  const step = (now) => {
    if (!state.playing) return;
    seek(state.t + (now - last)); // real time: frames appear at their own times
    last = now;
    if (state.t >= end - 1) return togglePlay();
    requestAnimationFrame(step);
  };
  if (state.playing) requestAnimationFrame(step);
}

// "Next unsure": the start of the next stretch of seconds whose confidence is below the threshold.
function nextUnsure() {
  const threshold = parseFloat($("threshold").value);
  const low = (i) => data.confidence[i] !== null && data.confidence[i] < threshold;
  const here = Math.floor((state.t - first) / SECOND);
  const starts = [];
  for (let i = 0; i < seconds; i++) if (low(i) && (i === 0 || !low(i - 1))) starts.push(i);
  if (!starts.length) return say(`no second below confidence ${threshold}`);
  const next = starts.find((i) => i > here) ?? starts[0];
  let stop = next, lowest = 1;
  while (stop < seconds && low(stop)) lowest = Math.min(lowest, data.confidence[stop++]);
  say(`unsure: ${stop - next} s from ${clock(first + next * SECOND)}, lowest confidence ${lowest.toFixed(2)}`);
  seek(first + next * SECOND);
}

// ------------------------------------------------------------------ editing

function edit(action, change, detail = {}) {
  const k = indexAt(history.current, state.t);
  try {
    const next = check(change(history.current, k), first, end, known);
    history.apply(action, next, { at_ms: state.t, ...detail });
  } catch (e) {
    if (e instanceof EditError) return say(`${action}: ${e.message}`);
    throw e;
  }
  keepDraft();
  render();
}

function step(action) {
  try {
    history[action]();
  } catch (e) {
    if (e instanceof EditError) return say(e.message);
    throw e;
  }
  keepDraft();
  render();
}

async function save() {
  const body = {
    segments: history.current.filter((s) => s.id !== NULL_ID),
    edits: history.log,
    edits_saved: data.edits_saved, // the server refuses (409) when another page saved since
  };
  const response = await fetch("/api/save", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json();
  if (!response.ok) return say(`not saved: ${answer.detail}`);
  data.saved = true;
  data.edits_saved = answer.edits_saved;
  draftBase = `${data.saved}/${data.edits_saved}`;
  history.log = [];
  localStorage.removeItem(draftKey);
  say(`saved ${answer.segments} segments`);
  setStatus();
}

const KEYS = {
  " ": () => togglePlay(),
  ArrowRight: (e) => (e.shiftKey ? jumpSegment(1) : seek(state.t + SECOND)),
  ArrowLeft: (e) => (e.shiftKey ? jumpSegment(-1) : seek(state.t - SECOND)),
  PageDown: () => jumpSegment(1),
  PageUp: () => jumpSegment(-1),
  Home: () => seek(first),
  End: () => seek(end - 1),
  n: () => nextUnsure(),
  "[": () => edit("move_start", (segs, k) => moveStart(segs, k, state.t)),
  "]": () => edit("move_end", (segs, k) => moveEnd(segs, k, state.t)),
  s: () => edit("split", (segs, k) => split(segs, k, state.t)),
  m: () => edit("merge_next", (segs, k) => merge(segs, k, 1)),
  M: () => edit("merge_previous", (segs, k) => merge(segs, k, -1)),
  Delete: () => edit("relabel", (segs, k) => relabel(segs, k, NULL_ID), { id: NULL_ID }),
  Backspace: () => edit("relabel", (segs, k) => relabel(segs, k, NULL_ID), { id: NULL_ID }),
  "+": () => zoom(2),
  "=": () => zoom(2),
  "-": () => zoom(0.5),
  "*": () => zoom(0),
};

function jumpSegment(direction) {
  const k = indexAt(history.current, state.t) + direction;
  if (k >= 0 && k < history.current.length) seek(history.current[k].start_ms);
}

function onKey(e) {
  if (e.target instanceof HTMLInputElement) return;
  const ctrl = e.ctrlKey || e.metaKey;
  if (ctrl && e.key.toLowerCase() === "z") step(e.shiftKey ? "redo" : "undo");
  else if (ctrl && e.key === "y") step("redo");
  else if (ctrl && e.key === "s") save();
  else if (!ctrl && /^[0-9]$/.test(e.key)) {
    const c = data.classes.find((x) => x.index === (Number(e.key) + 9) % 10);
    edit("relabel", (segs, k) => relabel(segs, k, c.id), { id: c.id });
  } else if (!ctrl && KEYS[e.key]) KEYS[e.key](e);
  else return;
  e.preventDefault();
}

function onPointer(e) {
  if (e.type === "pointermove" && !(e.buttons & 1)) return;
  const x = e.clientX - $("content").getBoundingClientRect().left;
  seek(first + (x / state.pps) * SECOND, { follow: false });
}

document.addEventListener("keydown", onKey);
// a clicked button gives the focus back, so Space plays instead of pressing that button again
document.addEventListener("click", (e) => e.target.closest?.("button")?.blur());
$("content").addEventListener("pointerdown", (e) => {
  $("content").setPointerCapture(e.pointerId);
  onPointer(e);
});
$("content").addEventListener("pointermove", onPointer);
$("track").addEventListener("scroll", () => drawAll());
new ResizeObserver(() => data && zoom(1)).observe($("track"));
window.addEventListener("beforeunload", (e) => {
  if (dirty()) e.preventDefault(); // the draft is kept anyway; the browser still asks before leaving
});
$("play").addEventListener("click", togglePlay);
$("next-unsure").addEventListener("click", nextUnsure);
$("zoom-in").addEventListener("click", () => zoom(2));
$("zoom-out").addEventListener("click", () => zoom(0.5));
$("zoom-all").addEventListener("click", () => zoom(0));
$("undo").addEventListener("click", () => step("undo"));
$("redo").addEventListener("click", () => step("redo"));
$("save").addEventListener("click", save);

load().catch((e) => {
  say(`cannot load the annotation: ${e.message}`);
  document.body.dataset.ready = "error";
});
