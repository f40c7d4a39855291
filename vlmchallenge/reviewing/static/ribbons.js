// The per-second strips under the segments, drawn for the visible part of the time axis only (a 30-min recording
// at the closest zoom is wider than any canvas may be): the model's labels, its confidence as a heat strip, the
// ground truth and per-second correctness of the reviewed timeline, and the seconds without frames.
import { indexAt, NULL_ID, SECOND } from "./timeline.js";

// Tableau 10 for the ten operations in the toolkit's order; Null light grey.
const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const NO_VALUE = "#2b2b2b";

export function colourOf(id) {
  return id === NULL_ID ? "#e8e8e8" : PALETTE[Math.round(id / 100) - 1] ?? "#000";
}

// Low confidence red, high green: the eye finds the red stretches first.
function heat(confidence) {
  return confidence === null ? NO_VALUE : `hsl(${Math.round(120 * confidence)}, 75%, 45%)`;
}

const STATUS_COLOUR = { predicted: null, no_frames: "#7a1f1f", no_window: "#c77c1a" };

export function drawStrips({ track, data, pps, segments, first }) {
  const width = track.clientWidth;
  const from = Math.max(0, Math.floor(track.scrollLeft / pps));
  const to = Math.min(data.status.length, Math.ceil((track.scrollLeft + width) / pps) + 1);
  const label = (i) => segments[indexAt(segments, first + i * SECOND)].id;
  const strips = {
    "model-lane": (i) => (data.predicted[i] === null ? NO_VALUE : colourOf(data.predicted[i])),
    confidence: (i) => heat(data.confidence[i]),
    "gaps-lane": (i) => STATUS_COLOUR[data.status[i]],
  };
  if (data.truth !== null) {
    strips["truth-lane"] = (i) => (data.truth[i] === null ? NO_VALUE : colourOf(data.truth[i]));
    strips["correct-lane"] = (i) =>
      data.truth[i] === null ? NO_VALUE : data.truth[i] === label(i) ? "#3a9d4a" : "#d03b3b";
  }
  for (const [id, colour] of Object.entries(strips)) {
    const ctx = sized(document.getElementById(id), width);
    for (let i = from; i < to; i++) {
      const c = colour(i);
      if (!c) continue;
      ctx.fillStyle = c;
      const x = i * pps - track.scrollLeft;
      ctx.fillRect(Math.floor(x), 0, Math.max(1, Math.ceil(x + pps) - Math.floor(x)), ctx.canvas.height);
    }
  }
  drawRuler(sized(document.getElementById("ruler"), width), track.scrollLeft, pps, first, from, to);
}

function sized(canvas, width) {
  canvas.style.width = `${width}px`;
  canvas.width = width;
  canvas.height = canvas.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  return ctx;
}

function drawRuler(ctx, scrollLeft, pps, first, from, to) {
  const every = [1, 5, 10, 30, 60, 300, 600, 1800].find((s) => s * pps >= 70) ?? 3600;
  ctx.fillStyle = "#555";
  ctx.font = "11px sans-serif";
  for (let i = from - (from % every); i < to; i += every) {
    const x = i * pps - scrollLeft;
    ctx.fillRect(Math.round(x), 0, 1, ctx.canvas.height);
    const jst = new Date(first + i * SECOND + 9 * 3600 * SECOND);
    ctx.fillText(jst.toISOString().slice(11, 19), Math.round(x) + 3, ctx.canvas.height - 4);
  }
}
