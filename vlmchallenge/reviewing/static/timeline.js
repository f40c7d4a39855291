// The editable timeline: segments that cover the annotated seconds end to end, Null (8100) where nothing is
// labelled, on whole seconds. Every edit returns a new list or throws: a list that breaks a rule (overlap,
// start >= end, unknown id, a hole) is never shown or saved. Saving drops the Null segments, as OpenPack's
// files do (the server checks again: vlmchallenge/reviewing/reviewed_timeline.py).

export const NULL_ID = 8100;
export const SECOND = 1000;

export class EditError extends Error {}

// The saved segments (no Null rows, maybe gaps) -> a full cover of [first, end) with Null in the gaps.
export function cover(segments, first, end) {
  const out = [];
  let t = first;
  for (const s of [...segments].sort((a, b) => a.start_ms - b.start_ms)) {
    if (s.start_ms > t) out.push({ id: NULL_ID, start_ms: t, end_ms: s.start_ms });
    out.push({ id: s.id, start_ms: s.start_ms, end_ms: s.end_ms });
    t = s.end_ms;
  }
  if (t < end) out.push({ id: NULL_ID, start_ms: t, end_ms: end });
  return joinNulls(out);
}

// Neighbouring Null segments are one gap: a file cannot tell them apart, so the page does not either.
function joinNulls(segments) {
  const out = [];
  for (const s of segments) {
    const last = out[out.length - 1];
    if (last && last.id === NULL_ID && s.id === NULL_ID) last.end_ms = s.end_ms;
    else out.push({ ...s });
  }
  return out;
}

export function check(segments, first, end, knownIds) {
  let t = first;
  segments.forEach((s, k) => {
    if (!knownIds.has(s.id)) throw new EditError(`segments[${k}].id: unknown operation ${s.id}`);
    if (s.start_ms % SECOND || s.end_ms % SECOND) throw new EditError(`segments[${k}]: not on whole seconds`);
    if (s.start_ms !== t) throw new EditError(`segments[${k}].start_ms: expected ${t}, got ${s.start_ms}`);
    if (!(s.start_ms < s.end_ms)) throw new EditError(`segments[${k}]: start must be before end`);
    t = s.end_ms;
  });
  if (t !== end) throw new EditError(`the segments end at ${t}, expected ${end}`);
  return segments;
}

export function indexAt(segments, t) {
  let lo = 0, hi = segments.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (segments[mid].start_ms <= t) lo = mid; else hi = mid - 1;
  }
  return lo;
}

const secondOf = (t) => t - (((t % SECOND) + SECOND) % SECOND);

function replaced(segments, from, count, parts) {
  const out = segments.map((s) => ({ ...s }));
  out.splice(from, count, ...parts);
  return joinNulls(out);
}

export function relabel(segments, k, id) {
  if (segments[k].id === id) throw new EditError("the segment already has this label");
  return replaced(segments, k, 1, [{ ...segments[k], id }]);
}

// "[": the second under the cursor becomes the segment's first; the previous segment gives or takes the time.
export function moveStart(segments, k, t) {
  const s = secondOf(t);
  if (k === 0) throw new EditError("the first segment starts where the recording does");
  const prev = segments[k - 1], seg = segments[k];
  if (!(prev.start_ms < s && s < seg.end_ms)) throw new EditError("the new start must leave both segments a second");
  return replaced(segments, k - 1, 2, [{ ...prev, end_ms: s }, { ...seg, start_ms: s }]);
}

// "]": the second under the cursor becomes the segment's last.
export function moveEnd(segments, k, t) {
  const e = secondOf(t) + SECOND;
  if (k === segments.length - 1) throw new EditError("the last segment ends where the recording does");
  const seg = segments[k], next = segments[k + 1];
  if (!(seg.start_ms < e && e < next.end_ms)) throw new EditError("the new end must leave both segments a second");
  return replaced(segments, k, 2, [{ ...seg, end_ms: e }, { ...next, start_ms: e }]);
}

// "s": the second under the cursor starts a new segment with the same label.
export function split(segments, k, t) {
  const s = secondOf(t), seg = segments[k];
  if (!(seg.start_ms < s && s < seg.end_ms)) throw new EditError("split inside a segment, not at its first second");
  return replaced(segments, k, 1, [{ ...seg, end_ms: s }, { ...seg, start_ms: s }]);
}

// "m" / "M": one segment from this one and its next (or previous) neighbour, with this one's label.
export function merge(segments, k, direction) {
  const j = k + direction;
  if (j < 0 || j >= segments.length) throw new EditError("no neighbour on that side");
  const [a, b] = direction > 0 ? [segments[k], segments[j]] : [segments[j], segments[k]];
  return replaced(segments, Math.min(k, j), 2, [{ id: segments[k].id, start_ms: a.start_ms, end_ms: b.end_ms }]);
}

// Undo and redo over whole states, and the log of every change (old and new value, and when).
export class History {
  constructor(segments) {
    this.current = segments;
    this.past = [];
    this.future = [];
    this.log = [];
  }

  apply(action, segments, detail) {
    this.past.push(this.current);
    this.future = [];
    this.record(action, this.current, segments, detail);
    this.current = segments;
  }

  undo() {
    if (!this.past.length) throw new EditError("nothing to undo");
    this.future.push(this.current);
    this.record("undo", this.current, this.past[this.past.length - 1], {});
    this.current = this.past.pop();
  }

  redo() {
    if (!this.future.length) throw new EditError("nothing to redo");
    this.past.push(this.current);
    this.record("redo", this.current, this.future[this.future.length - 1], {});
    this.current = this.future.pop();
  }

  // Only the segments that changed, before and after: a log a person can read.
  record(action, before, after, detail) {
    const key = (s) => `${s.id}/${s.start_ms}/${s.end_ms}`;
    const kept = new Set(after.map(key));
    const had = new Set(before.map(key));
    this.log.push({
      time: new Date().toISOString(),
      action,
      ...detail,
      old: before.filter((s) => !kept.has(key(s))),
      new: after.filter((s) => !had.has(key(s))),
    });
  }
}
