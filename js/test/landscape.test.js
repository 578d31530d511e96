import assert from "node:assert/strict";
import { test } from "node:test";
import { contourLevels, contourLines } from "../src/lib/contours.js";
import {
  countFinite,
  focusPoint,
  gridCellRect,
  gridImage,
  gridLayout,
  gridPointAt,
  gridScales,
  isOrigin,
  nearestIndex,
  slicesThrough,
} from "../src/lib/grid.js";
import { colormapLUT } from "../src/lib/scales.js";
import { interpolateGrid, surfaceMesh, surfacePosition } from "../src/lib/surface.js";
import { labelledPoints, pointNear, trajectoryPixels } from "../src/lib/trajectory.js";

const margin = { left: 60, top: 10, right: 100, bottom: 40 };
const close = (a, b, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

// A 3 x 2 grid (A = 3 alphas, B = 2 betas), value = 10 i + j.
const A3B2 = Float32Array.from([0, 1, 10, 11, 20, 21]);

test("grid image puts alpha across and beta upwards", () => {
  const img = gridImage(A3B2, 3, 2);
  // top row is the largest beta (j = 1), left column the first alpha (i = 0)
  assert.deepEqual(Array.from(img), [1, 11, 21, 0, 10, 20]);
  assert.throws(() => gridImage(A3B2, 2, 2), RangeError);
});

test("layout, hit-testing and cell rectangles agree", () => {
  const L = gridLayout({ A: 3, B: 2, width: 300, height: 200, margin });
  assert.equal(L.cw, 100);
  assert.equal(L.ch, 100);
  assert.equal(L.totalWidth, 60 + 300 + 100);
  assert.equal(L.totalHeight, 10 + 200 + 40);
  assert.deepEqual(gridPointAt(L, 60, 10), { i: 0, j: 1 }); // top-left: first alpha, last beta
  assert.deepEqual(gridPointAt(L, 60 + 299.9, 10 + 199.9), { i: 2, j: 0 });
  assert.deepEqual(gridPointAt(L, 60 + 150, 10 + 150), { i: 1, j: 0 });
  assert.equal(gridPointAt(L, 59.9, 50), null);
  assert.equal(gridPointAt(L, 60 + 300, 50), null);
  for (const [i, j] of [[0, 0], [2, 1], [1, 0]]) {
    const r = gridCellRect(L, i, j);
    assert.deepEqual(gridPointAt(L, r.x + r.w / 2, r.y + r.h / 2), { i, j });
  }
  assert.throws(() => gridLayout({ A: 0, B: 2 }), RangeError);
});

test("scales put grid points at cell centres, also on non-uniform grids, and extend beyond", () => {
  const L = gridLayout({ A: 3, B: 2, width: 300, height: 200, margin });
  const s = gridScales(L, [-1, 0, 2], [-0.5, 0.5]);
  close(s.x(-1), 60 + 50);
  close(s.x(0), 60 + 150);
  close(s.x(1), 60 + 200); // halfway between the centres of 0 and 2
  close(s.x(2), 60 + 250);
  close(s.x(4), 60 + 350); // extended with the last segment's slope
  close(s.y(0.5), 10 + 50); // largest beta at the top
  close(s.y(-0.5), 10 + 150);
  close(s.y(0), 10 + 100);
  // a one-point axis maps its value to the centre
  const one = gridScales(gridLayout({ A: 1, B: 1, width: 100, height: 100 }), [0.3], [7]);
  close(one.x(0.3), 50);
  close(one.y(7), 50);
  assert.throws(() => gridScales(L, [0, 1], [0, 1]), RangeError);
});

test("slices through a point are the grid's column and row", () => {
  const { alongAlpha, alongBeta } = slicesThrough(A3B2, 3, 2, 1, 1);
  assert.deepEqual(Array.from(alongAlpha), [1, 11, 21]); // beta index 1, every alpha
  assert.deepEqual(Array.from(alongBeta), [10, 11]); // alpha index 1, every beta
  assert.throws(() => slicesThrough(A3B2, 3, 2, 3, 0), RangeError);
});

test("nearest index, focus point and origin test", () => {
  const alphas = Float32Array.from([-1, -0.5, 0, 0.5, 1]);
  assert.equal(nearestIndex(alphas, 0.26), 3);
  assert.equal(nearestIndex(alphas, -7), 0);
  assert.equal(nearestIndex([], 1), -1);
  assert.equal(nearestIndex(alphas, NaN), -1);
  assert.deepEqual(focusPoint(alphas, alphas, null), { i: 2, j: 2 }); // the origin by default
  assert.deepEqual(focusPoint(alphas, alphas, [0.5, -1]), { i: 3, j: 0 });
  assert.ok(isOrigin(alphas, 2));
  assert.ok(!isOrigin(alphas, 3));
  assert.ok(isOrigin(Float32Array.from([-1, 1e-8, 1]), 1)); // rounding of a linspace through 0
  assert.ok(!isOrigin(Float32Array.from([-1, -1 / 3, 1 / 3, 1]), 1)); // an even grid misses 0
  assert.equal(countFinite(Float32Array.from([1, NaN, Infinity, 0])), 2);
});

test("contour levels are round values inside the domain, log levels in log10", () => {
  assert.deepEqual(contourLevels([0.05, 0.95], { count: 5 }), [0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(contourLevels([0, 1], { count: 4 }), [0.2, 0.4, 0.6, 0.8]); // ends excluded
  assert.deepEqual(contourLevels([1, 1.0001], { count: 2 }), [1.00005]); // nothing round fits
  const log = contourLevels([0.5, 2000], { count: 4, log: true });
  assert.deepEqual(log, [1, 10, 100, 1000]);
  assert.throws(() => contourLevels([0, 1], { log: true }), RangeError);
  assert.throws(() => contourLevels([1, 1]), RangeError);
});

test("contours of a ramp are straight lines at the interpolated position", () => {
  const nx = 6;
  const ny = 4;
  const ramp = Float64Array.from({ length: nx * ny }, (_, k) => k % nx); // value = column
  const [{ level, lines }] = contourLines(ramp, nx, ny, [2.25]);
  assert.equal(level, 2.25);
  assert.equal(lines.length, 1);
  for (const [x] of lines[0]) close(x, 2.25 + 0.5); // sample c sits at c + 0.5
  const ys = lines[0].map((p) => p[1]).sort((a, b) => a - b);
  assert.deepEqual(ys, [0.5, 1.5, 2.5, 3.5]); // from the first to the last row, not the frame
});

test("contours of a bowl are closed rings at the right radius; log levels interpolate log values", () => {
  const n = 21;
  const img = new Float64Array(n * n);
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) img[r * n + c] = (c - 10) ** 2 + (r - 10) ** 2;
  const [{ lines }] = contourLines(img, n, n, [25]);
  assert.equal(lines.length, 1);
  const ring = lines[0];
  assert.deepEqual(ring[0], ring[ring.length - 1]); // closed
  for (const [x, y] of ring) {
    const radius = Math.hypot(x - 10.5, y - 10.5);
    assert.ok(radius > 4.9 && radius < 5.1, `radius ${radius}`);
  }
  // exp of the bowl: the log-level contour sits where the bowl is 25 again
  const expImg = Float64Array.from(img, (v) => Math.exp(v / 10));
  const [{ lines: logLines }] = contourLines(expImg, n, n, [Math.exp(2.5)], { log: true });
  assert.equal(logLines.length, 1);
  for (const [x, y] of logLines[0]) {
    const radius = Math.hypot(x - 10.5, y - 10.5);
    assert.ok(radius > 4.9 && radius < 5.1, `radius ${radius}`);
  }
});

test("contours never run through missing values or along the frame", () => {
  const n = 21;
  const img = new Float64Array(n * n);
  for (let r = 0; r < n; r++) for (let c = 0; c < n; c++) img[r * n + c] = (c - 10) ** 2 + (r - 10) ** 2;
  // columns 12.. not computed yet (alpha rows arrive left to right)
  for (let r = 0; r < n; r++) img.fill(NaN, r * n + 12, r * n + n);
  const [{ lines }] = contourLines(img, n, n, [25]);
  assert.equal(lines.length, 1); // the ring is cut open where it meets missing values
  const line = lines[0];
  assert.notDeepEqual(line[0], line[line.length - 1]);
  for (const [x, y] of line) {
    assert.ok(x <= 11.5 + 1e-9, `vertex at x = ${x} lies among missing values`);
    close(Math.hypot(x - 10.5, y - 10.5), 5, 0.1);
  }
  // a level above everything on the grid gives nothing (d3 alone would trace the frame)
  const high = contourLines(Float64Array.from({ length: 16 }, () => 1), 4, 4, [0.5]);
  assert.deepEqual(high[0].lines, []);
  assert.deepEqual(contourLines(Float64Array.from([1, 2]), 2, 1, [1.5])[0].lines, []);
  assert.throws(() => contourLines(new Float64Array(3), 2, 2, [1]), RangeError);
});

test("trajectory points map to pixels; labels at the ends; hover finds the nearest point", () => {
  const L = gridLayout({ A: 3, B: 3, width: 300, height: 300, margin });
  const scales = gridScales(L, [-1, 0, 1], [-1, 0, 1]);
  const points = Float32Array.from([-1, -1, 0, 0, NaN, 0.5, 1, 1]);
  const px = trajectoryPixels(points, Int32Array.from([0, 10, 20, 30]), scales);
  assert.equal(px.length, 3); // the NaN point is left out
  assert.deepEqual(px.map((p) => p.step), [0, 10, 30]);
  assert.deepEqual(px.map((p) => p.index), [0, 1, 3]);
  close(px[0].x, 60 + 50);
  close(px[0].y, 10 + 250);
  close(px[1].x, 60 + 150);
  close(px[2].y, 10 + 50);
  assert.deepEqual(trajectoryPixels(Float32Array.from([0.5, 0.5]), null, scales).map((p) => p.step), [0]);
  assert.throws(() => trajectoryPixels(Float32Array.from([1, 2, 3]), null, scales), RangeError);
  assert.throws(() => trajectoryPixels(points, Int32Array.from([1]), scales), RangeError);
  assert.deepEqual(labelledPoints(4, 6), [0, 1, 2, 3]);
  assert.deepEqual(labelledPoints(101, 6), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(labelledPoints(101, 2), [0, 100]);
  assert.deepEqual(labelledPoints(0), []);
  assert.equal(pointNear(px, 60 + 152, 10 + 151, 6).step, 10);
  assert.equal(pointNear(px, 60 + 160, 10 + 150, 6), null);
});

test("surface mesh: scaled positions, LUT colours, triangles only over complete squares", () => {
  const lut = colormapLUT("viridis", 256);
  const alphas = [-2, 0, 2];
  const betas = [-1, 1];
  const values = Float32Array.from([0, 1, 2, 3, NaN, 4]); // [3, 2]; (2, 0) missing
  const mesh = surfaceMesh(values, 3, 2, { alphas, betas, domain: [0, 4], lut, height: 1 });
  assert.equal(mesh.positions.length, 18);
  assert.deepEqual(Array.from(mesh.positions.slice(0, 3)), [-1, 0, 1]); // alpha -2, value 0, beta -1
  assert.deepEqual(Array.from(mesh.positions.slice(9, 12)), [0, 0.75, -1]); // alpha 0, beta 1, value 3
  assert.equal(mesh.quads, 1); // the second square touches the missing value
  assert.deepEqual(Array.from(mesh.indices), [0, 2, 1, 2, 3, 1]);
  assert.deepEqual(Array.from(mesh.colors.slice(0, 3)), [lut[0] / 255, lut[1] / 255, lut[2] / 255].map(Math.fround));
  const top = 3 * 255;
  assert.deepEqual(Array.from(mesh.colors.slice(15, 18)), [lut[top] / 255, lut[top + 1] / 255, lut[top + 2] / 255].map(Math.fround));
  // on a log scale non-positive values leave holes, and heights follow log values
  const logMesh = surfaceMesh(Float32Array.from([1, 10, 100, 0]), 2, 2, { alphas: [0, 1], betas: [0, 1], domain: [1, 100], log: true, lut, height: 1 });
  assert.equal(logMesh.quads, 0);
  close(logMesh.positions[4], 0.5); // value 10 halfway up in log
  assert.throws(() => surfaceMesh(values, 2, 2, { alphas, betas, domain: [0, 4], lut }), RangeError);
});

test("bilinear interpolation on the grid, ignoring missing corners without weight", () => {
  const alphas = [0, 1, 3];
  const betas = [0, 2];
  const values = Float64Array.from([0, 2, 1, 3, 3, NaN]); // v = alpha + beta, NaN at (3, 2)
  close(interpolateGrid(values, 3, 2, alphas, betas, 0.5, 1), 1.5);
  close(interpolateGrid(values, 3, 2, alphas, betas, 1, 0), 1);
  close(interpolateGrid(values, 3, 2, alphas, betas, 3, 0), 3); // exact grid point next to the NaN
  assert.ok(Number.isNaN(interpolateGrid(values, 3, 2, alphas, betas, 2, 1)));
  close(interpolateGrid(values, 3, 2, alphas, betas, -5, 0), 0); // clamped
  const p = surfacePosition(values, 3, 2, { alphas, betas, domain: [0, 4], height: 1 }, 1, 0);
  close(p[0], -1 / 3);
  close(p[1], 0.25);
  close(p[2], 1);
  assert.equal(surfacePosition(values, 3, 2, { alphas, betas, domain: [0, 4] }, 2, 1), null);
});

test("thinLabels drops step labels that pile up and keeps the ends (as figures.landscape.thin_labels)", async () => {
  const { thinLabels } = await import("../src/lib/trajectory.js");
  const pts = [[0, 0], [40, 0], [60, 10], [64, 12], [66, 13], [67, 13.5]].map(([x, y]) => ({ x, y }));
  assert.deepEqual(thinLabels(pts, [0, 1, 2, 3, 4, 5], 18), [0, 1, 5]);
  assert.deepEqual(thinLabels(pts, [0, 5], 100), [5]);
  assert.deepEqual(thinLabels(pts, [], 18), []);
});
