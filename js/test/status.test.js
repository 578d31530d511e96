import assert from "node:assert/strict";
import { test } from "node:test";
import { buttonStates, formatDuration, formatRate, statusText } from "../src/lib/status.js";

test("durations", () => {
  assert.equal(formatDuration(null), "–");
  assert.equal(formatDuration(Infinity), "–");
  assert.equal(formatDuration(0.2), "<1 s");
  assert.equal(formatDuration(42.4), "42 s");
  assert.equal(formatDuration(185), "3 min 05 s");
  assert.equal(formatDuration(2 * 3600 + 7 * 60 + 10), "2 h 07 min");
});

test("rates keep about three digits", () => {
  assert.equal(formatRate(1234.4), "1234");
  assert.equal(formatRate(12.345), "12.3");
  assert.equal(formatRate(0.51234), "0.512");
  assert.equal(formatRate(0), "0");
});

test("status line while running, paused, done, failed", () => {
  const base = { done: 64, total: 256, rate: 12.34, eta: 15.2, elapsed: 5, message: "" };
  assert.equal(statusText({ ...base, status: "running" }), "running · 64 / 256 samples (25%) · 12.3 samples/s · ETA 15 s");
  assert.equal(statusText({ ...base, status: "paused" }), "paused · 64 / 256 samples (25%) · ETA 15 s");
  assert.equal(statusText({ ...base, status: "done", done: 256, eta: 0, message: "done: 256 of 256 units" }), "done · 256 / 256 samples (100%) · in 5 s");
  assert.equal(
    statusText({ ...base, status: "error", eta: null, message: "ValueError: bad batch" }),
    "error · 64 / 256 samples (25%) · ValueError: bad batch",
  );
  assert.equal(statusText({ status: "running", done: 10, total: null, rate: 2, eta: null }), "running · 10 samples · 2 samples/s");
  assert.equal(statusText({ status: "pending", done: 0, total: 0, rate: 0, eta: null }), "pending · 0 / 0 samples (100%)");
});

test("buttons follow the status", () => {
  assert.deepEqual(buttonStates("running"), { pause: true, resume: false, stop: true });
  assert.deepEqual(buttonStates("paused"), { pause: false, resume: true, stop: true });
  for (const s of ["done", "cancelled", "error"]) assert.deepEqual(buttonStates(s), { pause: false, resume: false, stop: false });
});

test("an empty view shows the error of a failed job instead of waiting", async () => {
  const { emptyBodyText } = await import("../src/lib/status.js");
  const waiting = "waiting for the first batch…";
  assert.equal(emptyBodyText("running", "", waiting), waiting);
  assert.equal(emptyBodyText("pending", "", waiting), waiting);
  assert.equal(
    emptyBodyText("error", "ValueError: token ids must lie in [0, 11)", waiting),
    "the job failed: ValueError: token ids must lie in [0, 11)",
  );
  assert.equal(emptyBodyText("error", "", waiting), "the job failed: unknown error");
  assert.equal(emptyBodyText("cancelled", "cancelled after 0 batches", waiting), "stopped before any data");
});
