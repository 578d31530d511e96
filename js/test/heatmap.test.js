import assert from "node:assert/strict";
import { test } from "node:test";
import { cellAt, cellRect, fillRGBA, heatmapLayout } from "../src/lib/heatmap.js";
import { colorIndexer } from "../src/lib/scales.js";

const margin = { left: 100, top: 10, right: 50, bottom: 80 };

test("layout uses whole-pixel cells when they fit", () => {
  const small = heatmapLayout({ rows: 5, cols: 5, margin });
  assert.equal(small.cell, 40); // capped at maxCell
  assert.equal(small.width, 200);
  assert.equal(small.totalWidth, 100 + 200 + 50);
  assert.equal(small.totalHeight, 10 + 200 + 80);
  const mid = heatmapLayout({ rows: 64, cols: 64, margin });
  assert.equal(mid.cell, 6);
  const large = heatmapLayout({ rows: 1000, cols: 1000, margin, maxSize: 420 });
  assert.equal(large.width, 420);
  assert.ok(Math.abs(large.cell - 0.42) < 1e-12);
  assert.throws(() => heatmapLayout({ rows: 0, cols: 3 }), RangeError);
});

test("hit-testing finds the cell under the pointer, rows top to bottom", () => {
  const L = heatmapLayout({ rows: 4, cols: 6, margin, maxSize: 240 });
  assert.equal(L.cell, 40);
  assert.deepEqual(cellAt(L, 100, 10), { i: 0, j: 0 });
  assert.deepEqual(cellAt(L, 100 + 39.9, 10 + 39.9), { i: 0, j: 0 });
  assert.deepEqual(cellAt(L, 100 + 40, 10), { i: 0, j: 1 });
  assert.deepEqual(cellAt(L, 100 + 5 * 40 + 1, 10 + 3 * 40 + 1), { i: 3, j: 5 });
  assert.equal(cellAt(L, 99.9, 50), null);
  assert.equal(cellAt(L, 100 + 240, 50), null);
  assert.equal(cellAt(L, 150, 10 + 160), null);
  assert.equal(cellAt(L, NaN, 20), null);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 6; j++) {
      const r = cellRect(L, i, j);
      assert.deepEqual(cellAt(L, r.x + r.w / 2, r.y + r.h / 2), { i, j });
    }
  }
});

test("hit-testing with fractional cells covers every cell once", () => {
  const L = heatmapLayout({ rows: 700, cols: 700, margin: { left: 0, top: 0, right: 0, bottom: 0 }, maxSize: 350 });
  const seen = new Set();
  for (let p = 0; p < 350; p += 0.25) seen.add(cellAt(L, p, 0).j);
  assert.equal(seen.size, 700);
});

test("fillRGBA colours each cell and marks NaN and non-positive cells", () => {
  const lut = Uint8Array.from([0, 0, 0, 100, 100, 100, 200, 200, 200]);
  const values = Float32Array.from([1, 10, 100, NaN, 0]);
  const out = new Uint8ClampedArray(20);
  fillRGBA(out, values, colorIndexer([1, 100], { log: true, n: 3 }), lut, {
    nan: [9, 8, 7, 255],
    nonpositive: [1, 2, 3, 0],
  });
  assert.deepEqual(Array.from(out), [
    0, 0, 0, 255, 100, 100, 100, 255, 200, 200, 200, 255, 9, 8, 7, 255, 1, 2, 3, 0,
  ]);
  assert.throws(() => fillRGBA(new Uint8ClampedArray(3), values, () => 0, lut, {}), RangeError);
});
