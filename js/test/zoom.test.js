import assert from "node:assert/strict";
import { test } from "node:test";
import { viewTicks, niceTickStep } from "../src/lib/axes.js";
import { cellAt, cellRect, cellShown, heatmapLayout, withView } from "../src/lib/heatmap.js";
import { brushView, clampView, dragView, fullView, isFullView, panView, viewKey, zoomView } from "../src/lib/zoom.js";

const margin = { left: 112, top: 8, right: 96, bottom: 104 };

test("long maps get a minimum cell size and open on their top left corner", () => {
  const short = heatmapLayout({ rows: 17, cols: 17, margin, minCell: 2, maxView: 640 });
  assert.equal(short.cell, 24); // unchanged for short maps: whole pixels up to 420 px
  assert.deepEqual(short.view, fullView(17, 17));
  const mid = heatmapLayout({ rows: 256, cols: 256, margin, minCell: 2, maxView: 640 });
  assert.equal(mid.cell, 2); // was 1 px (420 // 256)
  assert.equal(mid.width, 512);
  assert.deepEqual(mid.view, fullView(256, 256));
  const long = heatmapLayout({ rows: 2048, cols: 2048, margin, minCell: 2, maxView: 640 });
  assert.equal(long.cell, 2);
  assert.equal(long.width, 640);
  assert.deepEqual(long.view, { r0: 0, c0: 0, nr: 320, nc: 320 });
  const squeezed = heatmapLayout({ rows: 2048, cols: 2048, margin }); // without minCell: as before
  assert.equal(squeezed.width, 420);
  assert.deepEqual(squeezed.view, fullView(2048, 2048));
});

// Every screen pixel maps to the cell drawn there: cell (i, j) covers
// [x + (j - c0) w, x + (j - c0 + 1) w) with w = width / nc, the same map drawImage uses.
function checkExactMapping(L) {
  const { r0, c0, nr, nc } = L.view;
  for (const [i, j] of [[r0, c0], [r0 + nr - 1, c0 + nc - 1], [r0 + (nr >> 1), c0 + (nc >> 2)]]) {
    const r = cellRect(L, i, j);
    assert.deepEqual(cellAt(L, r.x + r.w / 2, r.y + r.h / 2), { i, j }, `centre of (${i}, ${j})`);
    assert.deepEqual(cellAt(L, r.x + 1e-9, r.y + 1e-9), { i, j }, `top left corner of (${i}, ${j})`);
    assert.deepEqual(cellAt(L, r.x + r.w - 1e-6, r.y + r.h - 1e-6), { i, j }, `bottom right corner of (${i}, ${j})`);
  }
  // one column per step of w along a row, in order, covering the view once
  const seen = [];
  for (let k = 0; k < nc; k++) seen.push(cellAt(L, L.x + (k + 0.5) * (L.width / nc), L.y + 0.5).j);
  assert.deepEqual(seen, Array.from({ length: nc }, (_, k) => c0 + k));
  assert.equal(cellAt(L, L.x - 0.01, L.y + 1), null);
  assert.equal(cellAt(L, L.x + L.width, L.y + 1), null);
  assert.equal(cellAt(L, L.x + 1, L.y + L.height), null);
}

test("pixel -> cell mapping stays exact at several zooms and pans", () => {
  const base = heatmapLayout({ rows: 256, cols: 256, margin, minCell: 2, maxView: 640 });
  checkExactMapping(base);
  let view = base.view;
  for (const factor of [1.5, 2, 2, 4, 8, 16]) {
    view = zoomView(view, 256, 256, factor, 0.3, 0.7);
    const L = withView(base, view);
    checkExactMapping(L);
    assert.equal(L.cell, base.width / view.nc);
  }
  assert.equal(view.nr, 4); // stops at minCells
  checkExactMapping(withView(base, panView(view, 256, 256, 100, 250)));
  const long = heatmapLayout({ rows: 2048, cols: 2048, margin, minCell: 2, maxView: 640 });
  for (const v of [long.view, fullView(2048, 2048), { r0: 1000, c0: 37, nr: 123, nc: 123 }]) checkExactMapping(withView(long, v));
  // a known pixel: 10 cells shown from (100, 200) in 512 px: 51.2 px a cell
  const L = withView(base, { r0: 100, c0: 200, nr: 10, nc: 10 });
  assert.deepEqual(cellAt(L, 112 + 3 * 51.2 + 1, 8 + 9 * 51.2 + 1), { i: 109, j: 203 });
  assert.deepEqual(cellAt(L, 112 + 3 * 51.2 - 0.01, 8 + 0.5), { i: 100, j: 202 });
  assert.ok(cellShown(L, 105, 205) && !cellShown(L, 110, 205) && !cellShown(L, 105, 199));
});

test("the wheel zooms around the pointer: the cell under it stays under it", () => {
  const rows = 256;
  let view = fullView(rows, rows);
  for (const [fx, fy] of [[0.25, 0.75], [0.9, 0.1], [0.5, 0.5]]) {
    view = fullView(rows, rows);
    const anchor = { i: Math.floor(fy * rows), j: Math.floor(fx * rows) };
    for (let k = 0; k < 4; k++) {
      view = zoomView(view, rows, rows, 2, fx, fy);
      const under = { i: view.r0 + Math.floor(fy * view.nr), j: view.c0 + Math.floor(fx * view.nc) };
      assert.ok(Math.abs(under.i - anchor.i) <= 1 && Math.abs(under.j - anchor.j) <= 1, JSON.stringify({ view, under, anchor }));
    }
    assert.equal(view.nr, 16);
  }
  // zooming out comes back to the whole map and no further; tiny steps still move
  for (let k = 0; k < 10; k++) view = zoomView(view, rows, rows, 0.5, 0.5, 0.5);
  assert.ok(isFullView(view, rows, rows));
  const nudged = zoomView(fullView(rows, rows), rows, rows, 1.0001, 0.5, 0.5);
  assert.equal(nudged.nr, 255);
  assert.throws(() => zoomView(view, rows, rows, 0), RangeError);
  assert.throws(() => zoomView(view, rows, rows, NaN), RangeError);
});

test("drag pans by whole cells with the pointer, and stops at the map's edges", () => {
  const view = { r0: 100, c0: 100, nr: 64, nc: 64 };
  // 512 px show 64 cells: 8 px a cell; dragging 80 px right shows 10 columns further left
  assert.deepEqual(dragView(view, 256, 256, 80, -16, 512, 512), { r0: 102, c0: 90, nr: 64, nc: 64 });
  assert.deepEqual(dragView(view, 256, 256, 1e6, 1e6, 512, 512), { r0: 0, c0: 0, nr: 64, nc: 64 });
  assert.deepEqual(dragView(view, 256, 256, -1e6, -1e6, 512, 512), { r0: 192, c0: 192, nr: 64, nc: 64 });
  assert.deepEqual(panView(fullView(8, 8), 8, 8, 3, 3), fullView(8, 8)); // nothing to pan on the whole map
});

test("a brushed rectangle becomes a square view around it", () => {
  assert.deepEqual(brushView({ i: 40, j: 10 }, { i: 20, j: 30 }, 256, 256), { r0: 20, c0: 10, nr: 21, nc: 21 });
  const wide = brushView({ i: 50, j: 0 }, { i: 53, j: 39 }, 256, 256); // 4 x 40: a 40-cell square centred on it
  assert.deepEqual(wide, { r0: 32, c0: 0, nr: 40, nc: 40 });
  assert.deepEqual(brushView({ i: 255, j: 255 }, { i: 255, j: 255 }, 256, 256), { r0: 252, c0: 252, nr: 4, nc: 4 });
  assert.deepEqual(brushView({ i: 0, j: 0 }, { i: 2, j: 2 }, 3, 3), fullView(3, 3)); // smaller maps than minCells
  assert.equal(viewKey(wide), "32,0,40,40");
});

test("views are clamped to whole cells inside the map", () => {
  assert.deepEqual(clampView({ r0: -3.4, c0: 250.2, nr: 10.4, nc: 10.6 }, 256, 256), { r0: 0, c0: 245, nr: 10, nc: 11 });
  assert.deepEqual(clampView({ r0: 0, c0: 0, nr: 1, nc: 1000 }, 256, 256), { r0: 0, c0: 0, nr: 4, nc: 256 });
  assert.throws(() => clampView(fullView(1, 1), 0, 3), RangeError);
});

test("axis labels thin to round positions at every zoom", () => {
  assert.equal(niceTickStep(256, 42), 10);
  assert.equal(niceTickStep(2048, 53), 50);
  assert.equal(niceTickStep(17, 35), 1);
  assert.equal(niceTickStep(512, 35), 20); // was 15: "ticks every 13 positions" read badly
  assert.deepEqual(viewTicks(0, 17, 35), Array.from({ length: 17 }, (_, k) => k));
  assert.deepEqual(viewTicks(0, 256, 42), Array.from({ length: 26 }, (_, k) => 10 * k));
  assert.deepEqual(viewTicks(103, 20, 10), [104, 106, 108, 110, 112, 114, 116, 118, 120, 122]);
  assert.deepEqual(viewTicks(1000, 7, 53), [1000, 1001, 1002, 1003, 1004, 1005, 1006]); // zoomed in: every cell
  for (const [start, count, max] of [[0, 2048, 53], [333, 321, 40], [5, 9, 3]]) {
    const t = viewTicks(start, count, max);
    assert.ok(t.length <= max && t.length >= 1, `${t.length} ticks for at most ${max}`);
    assert.ok(t.every((k) => k >= start && k < start + count));
  }
});

test("a raster holds the cell under each pixel's centre: what hover and click report there", async () => {
  const { fillRGBA, fillViewRGBA, viewSamples } = await import("../src/lib/heatmap.js");
  const { colorIndexer } = await import("../src/lib/scales.js");
  const base = heatmapLayout({ rows: 2048, cols: 2048, margin, minCell: 2, maxView: 640 });
  for (const [view, dpr] of [[fullView(2048, 2048), 1], [fullView(2048, 2048), 2], [{ r0: 100, c0: 1500, nr: 900, nc: 900 }, 1.5], [base.view, 1], [{ r0: 7, c0: 9, nr: 40, nc: 40 }, 2]]) {
    const L = withView(base, view);
    const cells = viewSamples(view, L.width * dpr, L.height * dpr);
    const w = cells.cols.length;
    const h = cells.rows.length;
    assert.equal(w, Math.min(view.nc, Math.floor(L.width * dpr)));
    assert.equal(h, Math.min(view.nr, Math.floor(L.height * dpr)));
    for (let q = 0; q < w; q += 7) {
      const px = L.x + ((q + 0.5) * L.width) / w; // centre of raster column q on screen
      assert.equal(cellAt(L, px, L.y + 0.1).j, cells.cols[q], `column ${q} of ${JSON.stringify(view)} at dpr ${dpr}`);
    }
    for (let r = 0; r < h; r += 5) assert.equal(cellAt(L, L.x + 0.1, L.y + ((r + 0.5) * L.height) / h).i, cells.rows[r]);
    if (w === view.nc) assert.deepEqual(Array.from(cells.cols), Array.from({ length: w }, (_, k) => view.c0 + k)); // every cell
  }
  // colours: those of the sampled cells, as fillRGBA gives them
  const rows = 50;
  const values = Float32Array.from({ length: rows * rows }, (_, k) => (k % 7 === 0 ? NaN : 1 + (k % 97)));
  const lut = Uint8Array.from({ length: 256 * 3 }, (_, k) => k % 251);
  const special = { nan: [1, 2, 3, 255], nonpositive: [0, 0, 0, 0] };
  const indexer = colorIndexer([1, 100], { log: true });
  const cells = viewSamples({ r0: 10, c0: 5, nr: 30, nc: 40 }, 13, 11);
  const out = fillViewRGBA(new Uint8ClampedArray(4 * 13 * 11), values, rows, cells.rows, cells.cols, indexer, lut, special);
  const picked = [];
  for (const i of cells.rows) for (const j of cells.cols) picked.push(values[i * rows + j]);
  assert.deepEqual(Array.from(out), Array.from(fillRGBA(new Uint8ClampedArray(4 * picked.length), picked, indexer, lut, special)));
  assert.throws(() => fillViewRGBA(new Uint8ClampedArray(4), values, rows, cells.rows, cells.cols, indexer, lut, special), RangeError);
});
