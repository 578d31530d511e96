import assert from "node:assert/strict";
import { test } from "node:test";
import { cellLines, correlationText, gridLog, kindTitle, mapTitle, measureName, spectraSeries, toggled } from "../src/lib/attention_data.js";

test("map, measure and matrix names follow the Python figures", () => {
  assert.equal(mapTitle("head0"), "head 0");
  assert.equal(mapTitle("head12"), "head 12");
  assert.equal(mapTitle("head mean"), "head mean");
  assert.equal(mapTitle("rollout"), "rollout");
  assert.equal(measureName("entropy_rank"), "entropy rank");
  assert.equal(kindTitle("qk"), "W_QK");
});

test("the correlation line gives rho, its interval and what it is over", () => {
  const pane = { map: "head1", rho: 0.51234, low: 0.3, high: 0.7, cells: 10, samples: 6, confidence: 0.95 };
  assert.equal(
    correlationText(pane),
    "Spearman ρ(head 1, sensitivity) = 0.512 [0.300, 0.700] over 10 off-diagonal cells of 6 sequences (95% bootstrap interval)",
  );
  assert.match(correlationText({ ...pane, rho: NaN }), /= – \[/);
  assert.equal(correlationText(null), "");
});

test("tooltip lines show both maps at the same cell, row-major", () => {
  const S = 3;
  const attention = Float32Array.from({ length: 9 }, (_, k) => k / 10);
  const sensitivity = Float32Array.from({ length: 9 }, (_, k) => k + 100);
  const lines = cellLines(2, 1, { attention, sensitivity }, S, "head0", ["a", "b", "c"]);
  assert.equal(lines[0], "query 2:c");
  assert.equal(lines[1], "key   1:b");
  assert.match(lines[2], /^head 0 attention: 0\.7/);
  assert.match(lines[3], /^sensitivity s_ij: 107/);
  assert.match(cellLines(0, 0, { attention, sensitivity }, S, "rollout", [])[2], /^rollout: 0/);
});

test("log colours only for a condition number with positive values", () => {
  assert.equal(gridLog("condition_number", [1, 1e6]), true);
  assert.equal(gridLog("condition_number", [NaN, NaN]), false);
  assert.equal(gridLog("stable_rank", [1, 1e6]), false);
});

test("a head's spectra become one series per kind over indices 1..r", () => {
  const head = {
    kinds: ["q", "qk"],
    singular_values: { q: { data: Float32Array.of(3, 2, 1) }, qk: { data: Float32Array.of(5, 4) } },
  };
  const { xs, series } = spectraSeries(head, (k) => `c${k}`);
  assert.deepEqual(xs, [1, 2, 3]);
  assert.deepEqual(series.map((s) => [s.label, s.ys, s.color]), [["W_Q", [3, 2, 1], "c0"], ["W_QK", [5, 4], "c1"]]);
  assert.deepEqual(spectraSeries(null, String), { xs: [], series: [] });
});

test("a second click on the same cell or head clears the selection", () => {
  assert.deepEqual(toggled(null, [1, 2]), [1, 2]);
  assert.equal(toggled([1, 2], [1, 2]), null);
  assert.deepEqual(toggled([1, 2], [2, 1]), [2, 1]);
  assert.deepEqual(toggled([1, 2], null), [1, 2]);
});
