import assert from "node:assert/strict";
import { test } from "node:test";
import {
  NAN_INDEX,
  NONPOSITIVE_INDEX,
  colorDomain,
  colorIndexer,
  colorbarTicks,
  colormapLUT,
  formatValue,
} from "../src/lib/scales.js";

test("viridis lookup table runs from dark purple to yellow", () => {
  const lut = colormapLUT("viridis", 256);
  assert.equal(lut.length, 768);
  assert.deepEqual(Array.from(lut.slice(0, 3)), [68, 1, 84]); // #440154
  assert.deepEqual(Array.from(lut.slice(765)), [253, 231, 37]); // #fde725
  assert.throws(() => colormapLUT("jet"), TypeError);
});

test("colour domains ignore NaN (and non-positive values on a log scale)", () => {
  const data = Float32Array.from([NaN, 0, 2, 8, -1, Infinity]);
  assert.deepEqual(colorDomain(data), [-1, 8]);
  assert.deepEqual(colorDomain(data, true), [2, 8]);
  assert.deepEqual(colorDomain(Float32Array.from([3, 3, NaN])), [0, 3]);
  assert.deepEqual(colorDomain(Float32Array.from([0, 0])), [0, 1]);
  assert.deepEqual(colorDomain(Float32Array.from([-2, -2])), [-2, 0]);
  assert.deepEqual(colorDomain(Float32Array.from([5]), true), [0.5, 5]);
  assert.deepEqual(colorDomain(Float32Array.from([NaN, 0]), true), [0.1, 1]);
  assert.deepEqual(colorDomain(new Float32Array(0)), [0, 1]);
});

test("linear indexer maps the domain onto the table and clamps", () => {
  const idx = colorIndexer([0, 10], { n: 10 });
  assert.equal(idx(0), 0);
  assert.equal(idx(0.99), 0);
  assert.equal(idx(1), 1);
  assert.equal(idx(5.5), 5);
  assert.equal(idx(10), 9);
  assert.equal(idx(-3), 0);
  assert.equal(idx(42), 9);
  assert.equal(idx(NaN), NAN_INDEX);
});

test("log indexer spaces decades evenly and flags non-positive values", () => {
  const idx = colorIndexer([1e-3, 1e1], { log: true, n: 4 });
  assert.equal(idx(1e-3), 0);
  assert.equal(idx(1.01e-2), 1);
  assert.equal(idx(0.2), 2);
  assert.equal(idx(5), 3);
  assert.equal(idx(0), NONPOSITIVE_INDEX);
  assert.equal(idx(-1), NONPOSITIVE_INDEX);
  assert.equal(idx(NaN), NAN_INDEX);
  assert.throws(() => colorIndexer([0, 1], { log: true }), RangeError);
  assert.throws(() => colorIndexer([1, 1]), RangeError);
});

test("colour-bar ticks lie in the domain, in order, with their positions", () => {
  const ticks = colorbarTicks([0, 1], false, 5);
  assert.deepEqual(ticks.map((t) => t.value), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  for (const t of ticks) assert.ok(Math.abs(t.t - t.value) < 1e-12);
  assert.equal(ticks[1].label, "0.2");
  const logTicks = colorbarTicks([1e-6, 1e2], true, 5);
  assert.ok(logTicks.length >= 2 && logTicks.length <= 6, `${logTicks.length} ticks`);
  for (const t of logTicks) {
    assert.ok(t.value >= 1e-6 && t.value <= 1e2);
    const expected = (Math.log(t.value) - Math.log(1e-6)) / (Math.log(1e2) - Math.log(1e-6));
    assert.ok(Math.abs(t.t - expected) < 1e-12);
    assert.ok(Number.isInteger(Math.round(Math.log10(t.value) * 1e9) / 1e9)); // decades only
  }
  const narrow = colorbarTicks([2, 8], true, 5);
  assert.ok(narrow.length >= 2 && narrow.length <= 6);
});

test("values print short", () => {
  assert.equal(formatValue(0), "0");
  assert.equal(formatValue(1.23456), "1.23");
  assert.equal(formatValue(0.05), "0.05");
  assert.equal(formatValue(1.234e-5), "1.23e-5");
  assert.equal(formatValue(-3.4e6), "−3.4e+6");
  assert.equal(formatValue(NaN), "–");
  assert.equal(formatValue(null), "–");
});
