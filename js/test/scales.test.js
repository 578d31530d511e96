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

test("auto log: a log scale where the positive values span two decades, never for counts", async () => {
  const { autoLog, resolveLog } = await import("../src/lib/scales.js");
  assert.equal(autoLog(Float32Array.from([0, NaN, 1, 99])), false); // < 2 decades
  assert.equal(autoLog(Float32Array.from([0, NaN, 1, 100])), true);
  assert.equal(autoLog(Float32Array.from([-1e6, 0.5, 2])), false); // negatives do not count
  assert.equal(autoLog(new Float32Array(0)), false);
  assert.equal(autoLog(Float32Array.from([1e-6, 1]), { count: true }), false);
  assert.equal(resolveLog("auto", Float32Array.from([1e-6, 1])), true);
  assert.equal(resolveLog(false, Float32Array.from([1e-6, 1])), false);
  assert.equal(resolveLog(true, Float32Array.from([1, 2])), true);
  assert.equal(resolveLog(true, Float32Array.from([1, 2]), { count: true }), false);
});

test("colour ranges clamp by percentiles (NumPy's linear rule) and by values; diverging maps centre on zero", async () => {
  const { colorRange, percentile } = await import("../src/lib/scales.js");
  const data = Float64Array.from({ length: 101 }, (_, k) => k); // 0..100
  assert.equal(percentile([0, 10], 25), 2.5);
  assert.equal(percentile([1, 2, 3, 4], 50), 2.5); // numpy.percentile([1,2,3,4], 50)
  assert.deepEqual(colorRange(data).domain, [0, 100]);
  assert.deepEqual(colorRange(data, { percentiles: [5, 95] }), { domain: [5, 95], clipped: true });
  assert.deepEqual(colorRange(data, { percentiles: [0, 90] }), { domain: [0, 90], clipped: false });
  assert.deepEqual(colorRange(data, { percentiles: [5, 95], limits: [null, 50] }).domain, [5, 50]);
  // log: percentiles of the positive values (1..100); a non-positive low limit is dropped
  assert.deepEqual(colorRange(data, { log: true, percentiles: [0, 100] }).domain, [1, 100]);
  assert.deepEqual(colorRange(data, { log: true, limits: [0, 50] }).domain, [1, 50]);
  const diff = Float32Array.from([-3, 1, 2, NaN]);
  assert.deepEqual(colorRange(diff, { diverging: true }).domain, [-3, 3]);
});

test("rdbu runs blue - white - red (d3's RdBu reversed), the same colours as the Python palette", async () => {
  const lut = colormapLUT("rdbu", 256);
  const hex = (k) => `#${Array.from(lut.slice(3 * k, 3 * k + 3), (x) => x.toString(16).padStart(2, "0")).join("")}`;
  // tests/figures/test_builders.py checks figures.charts.rgb_basis_palette against the same values
  assert.deepEqual([0, 1, 64, 127, 128, 200, 255].map(hex), [
    "#053061", "#063264", "#6cacd1", "#f1efee", "#f2efed", "#da6b57", "#67001f",
  ]);
});

test("viridis and magma are the colours the static charts use (figures/palettes.py)", async () => {
  const { readFileSync } = await import("node:fs");
  const text = readFileSync(new URL("../../tscope_widgets/figures/palettes.py", import.meta.url), "utf8");
  for (const [name, constant] of [["viridis", "_VIRIDIS"], ["magma", "_MAGMA"]]) {
    const block = text.split(`${constant} = (`)[1].split(")")[0];
    const packed = [...block.matchAll(/"([0-9a-f]+)"/g)].map((m) => m[1]).join("");
    const lut = colormapLUT(name, 256);
    const hex = Array.from(lut, (x) => x.toString(16).padStart(2, "0")).join("");
    assert.equal(packed, hex, name);
  }
});
