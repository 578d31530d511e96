import assert from "node:assert/strict";
import { test } from "node:test";
import { scaleLinear } from "d3-scale";
import { histogramBins } from "../src/lib/histogram.js";
import { linePath, valueExtent } from "../src/lib/lines.js";
import { columnProfile, offsetProfile, rowProfile, visibleOffsets } from "../src/lib/profiles.js";

test("row and column profiles of a row-major map", () => {
  const m = Float32Array.from([0, 1, 2, 3, 4, 5]); // 2 x 3
  assert.deepEqual(Array.from(rowProfile(m, 3, 1)), [3, 4, 5]);
  assert.deepEqual(Array.from(columnProfile(m, 2, 3, 2)), [2, 5]);
});

test("offset profile is the count-weighted mean along each diagonal i - j", () => {
  // 3 x 3 map, NaN at (0, 2); counts weight the cells.
  const v = Float32Array.from([1, 2, NaN, 3, 4, 5, 6, 7, 8]);
  const n = Int32Array.from([1, 1, 0, 1, 3, 1, 1, 1, 1]);
  const { offsets, values, weights } = offsetProfile(v, n, 3);
  assert.deepEqual(Array.from(offsets), [-2, -1, 0, 1, 2]);
  assert.ok(Number.isNaN(values[0])); // only (0,2), no data
  assert.equal(values[1], (2 + 5) / 2); // (0,1), (1,2)
  assert.equal(values[2], (1 + 3 * 4 + 8) / 5); // diagonal
  assert.equal(values[3], (3 + 7) / 2); // (1,0), (2,1)
  assert.equal(values[4], 6); // (2,0)
  assert.deepEqual(Array.from(weights), [0, 2, 5, 2, 1]);
  const unweighted = offsetProfile(v, null, 3);
  assert.equal(unweighted.values[2], (1 + 4 + 8) / 3);
});

test("histogram bins count every finite value once", () => {
  const values = Float32Array.from([0, 0.1, 0.5, 0.99, 1, NaN, 2]);
  const bins = histogramBins(values, 4);
  assert.equal(bins.length, 4);
  assert.equal(bins[0].x0, 0);
  assert.equal(bins[3].x1, 2);
  assert.deepEqual(bins.map((b) => b.count), [2, 2, 1, 1]); // [0, .5) [.5, 1) [1, 1.5) [1.5, 2]
  assert.equal(bins.reduce((a, b) => a + b.count, 0), 6);
  assert.deepEqual(histogramBins(Float32Array.from([3, 3, NaN])), [{ x0: 3, x1: 3, count: 2 }]);
  assert.deepEqual(histogramBins([]), []);
});

test("line paths break at missing values", () => {
  const sx = scaleLinear().domain([0, 4]).range([0, 40]);
  const sy = scaleLinear().domain([0, 1]).range([10, 0]);
  assert.equal(linePath([0, 1, 2, 3, 4], [0, 1, NaN, 0.5, 0], sx, sy), "M0,10L10,0M30,5L40,10");
  assert.equal(linePath([0, 1], [NaN, NaN], sx, sy), "");
  assert.deepEqual(valueExtent([NaN, -1, 3, 0]), [-1, 3]);
  assert.deepEqual(valueExtent([NaN, -1, 3, 0], true), [3, 3]);
  assert.equal(valueExtent([NaN]), null);
});

test("the offset axis starts at 0 where negative offsets hold only zeros or nothing (causal models)", () => {
  // causal 3 x 3 map: zeros above the diagonal
  const causal = offsetProfile(Float64Array.from([1, 0, 0, 2, 3, 0, 4, 5, 6]), null, 3);
  const shown = visibleOffsets(causal);
  assert.deepEqual(Array.from(shown.offsets), [0, 1, 2]);
  assert.deepEqual(Array.from(shown.values), [(1 + 3 + 6) / 3, (2 + 5) / 2, 4]);
  assert.deepEqual(Array.from(shown.weights), [3, 2, 1]);
  // a bidirectional map keeps its negative offsets, from the first one with data
  const both = visibleOffsets(offsetProfile(Float64Array.from([1, 0, 7, 2, 3, 0, 4, 5, 6]), null, 3));
  assert.deepEqual(Array.from(both.offsets), [-2, -1, 0, 1, 2]);
  const inner = visibleOffsets(offsetProfile(Float64Array.from([1, 8, 0, 2, 3, 0, 4, 5, 6]), null, 3));
  assert.deepEqual(Array.from(inner.offsets), [-1, 0, 1, 2]);
});
