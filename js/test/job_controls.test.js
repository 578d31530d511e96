import { test } from "node:test";
import assert from "node:assert/strict";
import { COMMANDS, STATUS_TRAITS, jobStatusView } from "../src/lib/job_controls.js";

const traits = (values) => (name) => values[name];

test("the status view of a running job counts its units and enables pause and stop", () => {
  const view = jobStatusView(traits({ status: "running", done: 2, total: 8, rate: 4, eta: 1.5, elapsed: 0.5, message: "" }), "rows");
  assert.equal(view.text, "running · 2 / 8 rows (25%) · 4 rows/s · ETA 2 s");
  assert.deepEqual([view.status, view.error], ["running", false]);
  assert.deepEqual(view.enabled, { pause: true, resume: false, stop: true });
});

test("an error is marked, its message shown, and no button acts", () => {
  const view = jobStatusView(traits({ status: "error", done: 3, total: null, rate: 0, eta: null, elapsed: 1, message: "boom" }));
  assert.equal(view.text, "error · 3 samples · boom");
  assert.equal(view.error, true);
  assert.deepEqual(view.enabled, { pause: false, resume: false, stop: false });
});

test("a paused job can resume or stop; the traits and commands are those of _controls.py", () => {
  const view = jobStatusView(traits({ status: "paused", done: 1, total: 4, rate: 0, eta: null, elapsed: 0, message: "" }));
  assert.deepEqual(view.enabled, { pause: false, resume: true, stop: true });
  assert.deepEqual(STATUS_TRAITS, ["status", "message", "done", "total", "rate", "eta", "elapsed"]);
  assert.deepEqual(COMMANDS, ["pause", "resume", "stop"]);
});
