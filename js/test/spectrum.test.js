import assert from "node:assert/strict";
import { test } from "node:test";
import { scaleLinear } from "d3-scale";
import { schemeTableau10 } from "d3-scale-chromatic";
import { drawAxes } from "../src/lib/axes.js";
import { cellAt, cellRect } from "../src/lib/heatmap.js";
import { seriesColor } from "../src/lib/multiline.js";
import {
  bandPath,
  blockMapMargins,
  eigenRows,
  groupOf,
  groupSpans,
  hasGroups,
  jointExtent,
  legendLayout,
  matrixRow,
  memberOf,
  nearestIndex,
  NO_THRESHOLD_LABEL,
  optimiserLines,
  panelsOf,
  stripLayout,
  weightsNote,
  floorDensity,
} from "../src/lib/spectrum_data.js";

const OPTIONS = [
  { key: "loss", label: "loss", panel: "loss" },
  { key: "lambda_max", label: "λ_max", panel: "curvature" },
  { key: "lambda_min", label: "λ_min", panel: "curvature" },
  { key: "lr", label: "η", panel: "learning rate" },
  { key: "grad_norm:block0", label: "‖∇L‖ block0", panel: "gradient norms" },
];
const PANELS = [
  { key: "curvature", title: "eig", y_label: "eigenvalue" },
  { key: "loss", title: "loss", y_label: "nats" },
  { key: "gradient norms", title: "grads", y_label: "norm" },
  { key: "learning rate", title: "lr", y_label: "η" },
];

test("panels follow the panel order and keep only selected series, with their option index", () => {
  const panels = panelsOf(OPTIONS, ["grad_norm:block0", "lambda_min", "loss", "lambda_max"], PANELS);
  assert.deepEqual(
    panels.map((p) => [p.key, p.yLabel, p.series.map((s) => [s.key, s.index])]),
    [
      ["curvature", "eigenvalue", [["lambda_max", 1], ["lambda_min", 2]]],
      ["loss", "nats", [["loss", 0]]],
      ["gradient norms", "norm", [["grad_norm:block0", 4]]],
    ],
  );
  assert.deepEqual(panelsOf(OPTIONS, [], PANELS), []);
  assert.deepEqual(panelsOf(undefined, undefined, undefined), []);
});

test("nearest index in increasing steps, ties to the lower one", () => {
  const xs = Int32Array.from([0, 10, 20, 40]);
  assert.equal(nearestIndex(xs, -5), 0);
  assert.equal(nearestIndex(xs, 0), 0);
  assert.equal(nearestIndex(xs, 4), 0);
  assert.equal(nearestIndex(xs, 5), 0); // tie
  assert.equal(nearestIndex(xs, 6), 1);
  assert.equal(nearestIndex(xs, 30), 2); // tie
  assert.equal(nearestIndex(xs, 31), 3);
  assert.equal(nearestIndex(xs, 1e9), 3);
  assert.equal(nearestIndex([], 3), -1);
  assert.equal(nearestIndex(xs, NaN), -1);
  assert.equal(nearestIndex([7], 100), 0);
});

test("group spans of parameter-group labels", () => {
  const labels = ["embed", "block0.attn.q", "block0.attn.k", "block0.mlp.in", "block1.attn.q", "ln_f", "head"];
  assert.deepEqual(groupSpans(labels), [
    { name: "embed", start: 0, end: 1 },
    { name: "block0", start: 1, end: 4 },
    { name: "block1", start: 4, end: 5 },
    { name: "ln_f", start: 5, end: 6 },
    { name: "head", start: 6, end: 7 },
  ]);
  assert.equal(hasGroups(groupSpans(labels)), true);
  assert.equal(hasGroups(groupSpans(["block0", "block1"])), false);
  assert.equal(groupOf("block0.attn.q"), "block0");
  assert.equal(memberOf("block0.attn.q"), "attn.q");
  assert.equal(memberOf("embed"), "embed");
  assert.equal(memberOf("odd."), "odd.");
  // A group that comes back later is a new span (rows stay in the given order).
  assert.deepEqual(groupSpans(["a.x", "b.y", "a.z"]).map((s) => s.name), ["a", "b", "a"]);
  assert.deepEqual(groupSpans([]), []);
});

test("block-map margins make room for labels, and for group names only when grouping", () => {
  const grouped = blockMapMargins(["block0.attn.q", "block0.mlp.out", "head"]);
  assert.equal(grouped.labelPx, "mlp.out".length * 6 + 8);
  assert.equal(grouped.groupPx, "block0".length * 6 + 8 + 8);
  assert.equal(grouped.left, 20 + grouped.groupPx + grouped.labelPx);
  assert.equal(grouped.bottom, 20 + 16 + 18 + grouped.labelPx);
  const flat = blockMapMargins(["block0.attn.q", "block0.mlp.out"], { grouping: false });
  assert.equal(flat.groupPx, 0);
  assert.equal(flat.labelPx, "block0.mlp.out".length * 6 + 8);
  const long = blockMapMargins(["x".repeat(100)]);
  assert.equal(long.labelPx, 18 * 6 + 8); // capped
});

test("strip layout: rows of fixed height, columns filling the width, usable by the heatmap helpers", () => {
  const margin = { left: 50, top: 8, right: 90, bottom: 60 };
  const L = stripLayout({ rows: 4, cols: 200, width: 400, height: 200, margin });
  assert.equal(L.height, 4 * 24); // capped at maxRow
  assert.equal(L.width, 400);
  assert.equal(L.totalWidth, 50 + 400 + 90);
  assert.equal(L.totalHeight, 8 + 96 + 60);
  assert.deepEqual(cellAt(L, 50 + 2.1, 8 + 25), { i: 1, j: 1 });
  assert.deepEqual(cellAt(L, 50 + 399.9, 8 + 95.9), { i: 3, j: 199 });
  assert.equal(cellAt(L, 49, 10), null);
  const r = cellRect(L, 2, 10);
  assert.deepEqual([r.x, r.y, r.w, r.h], [50 + 20, 8 + 48, 2, 24]);
  const tall = stripLayout({ rows: 100, cols: 3, width: 300, height: 200 });
  assert.equal(tall.height, 400); // at least minRow = 4 px per row
  assert.equal(tall.width, 3 * 48); // few columns: at most 2 * maxRow px each
  assert.throws(() => stripLayout({ rows: 0, cols: 3 }), RangeError);
});

test("drawAxes names rows and columns with the given label functions", () => {
  const calls = [];
  const ctx = new Proxy(
    {},
    {
      get: (_, name) =>
        name === "fillText" ? (text) => calls.push(text) : name === "measureText" ? (text) => ({ width: 6 * text.length }) : () => {},
      set: () => true,
    },
  );
  const L = stripLayout({ rows: 2, cols: 3, width: 300, height: 100, margin: { left: 40, top: 0, right: 0, bottom: 40 } });
  drawAxes(ctx, L, { theme: { fg: "#000", fg2: "#666", font: "sans" }, xTitle: "step", yTitle: "block", rowLabel: (i) => `r${i}`, colLabel: (j) => `c${j}` });
  assert.deepEqual(calls, ["r0", "r1", "c0", "c1", "c2", "step", "block"]);
  calls.length = 0;
  drawAxes(ctx, L, { tokens: ["a"], theme: { fg: "#000", fg2: "#666", font: "sans" }, xTitle: "x", yTitle: "y" });
  assert.deepEqual(calls, ["0:a", "1", "0:a", "1", "2", "x", "y"]); // the default: "i:token"
});

test("joint extent over series and bands; log keeps positive values", () => {
  assert.deepEqual(jointExtent([[1, NaN, 3], [-2, 0], null]), [-2, 3]);
  assert.deepEqual(jointExtent([[1, NaN, 3], [-2, 0]], true), [1, 3]);
  assert.deepEqual(jointExtent([[2, 2]]), [0, 2]);
  assert.deepEqual(jointExtent([[-2]]), [-2, 0]);
  assert.deepEqual(jointExtent([[0]]), [0, 1]);
  assert.deepEqual(jointExtent([[5]], true), [0.5, 50]);
  assert.equal(jointExtent([[NaN], [-1]], true), null);
  assert.equal(jointExtent([]), null);
});

test("band path: one closed polygon per run of usable points", () => {
  const sx = scaleLinear().domain([0, 3]).range([0, 30]);
  const sy = scaleLinear().domain([0, 10]).range([100, 0]);
  const d = bandPath([0, 1, 2, 3], [1, 1, NaN, 2], [3, 3, 5, 4], sx, sy);
  assert.equal(d, "M0,70L10,70L10,90L0,90Z"); // the lone point at x = 3 makes no polygon
  assert.equal(bandPath([0, 1], [NaN, NaN], [1, 1], sx, sy), "");
  const positive = bandPath([0, 1], [-1, 1], [2, 2], sx, sy, (v) => v > 0);
  assert.equal(positive, "");
});

test("matrix rows and eigenvalue table rows", () => {
  const m = Float32Array.from([1, 2, 3, 4, 5, 6]); // 2 x 3
  assert.deepEqual(matrixRow(m, 3, 1), [4, 5, 6]);
  const rows = eigenRows({ eigenvalues: [4, -2, 0, null], residuals: [0.4, 0.2, 0.1, null] });
  assert.deepEqual(rows.slice(0, 2), [
    { k: 1, value: 4, residual: 0.4, relative: 0.1 },
    { k: 2, value: -2, residual: 0.2, relative: 0.1 },
  ]);
  assert.ok(Number.isNaN(rows[2].relative));
  assert.ok(Number.isNaN(rows[3].value) && Number.isNaN(rows[3].residual));
  assert.deepEqual(eigenRows(null), []);
  assert.deepEqual(eigenRows({ status: "running" }), []);
});

test("series colours are Tableau 10, as in the static picture (SERIES_COLORS in _static_charts.py)", () => {
  assert.equal(seriesColor(0), schemeTableau10[0]);
  assert.equal(seriesColor(11), schemeTableau10[1]);
  assert.deepEqual(Array.from({ length: 10 }, (_, k) => seriesColor(k)), [
    "#4e79a7", "#f28e2c", "#e15759", "#76b7b2", "#59a14f", "#edc949", "#af7aa1", "#ff9da7", "#9c755f", "#bab0ab",
  ]);
});

test("legend entries wrap to a new row when the next one does not fit", () => {
  const at = legendLayout(["abcd", "ef", "ghijklmnop", "q"], { left: 50, right: 200 });
  // widths 14 + 6 per char: 38, 26, 74, 20; gaps 12
  assert.deepEqual(at, [
    { x: 50, row: 0 },
    { x: 100, row: 0 },
    { x: 50, row: 1 }, // 138 + 74 > 200
    { x: 136, row: 1 },
  ]);
  assert.deepEqual(legendLayout(["x".repeat(100)], { left: 10, right: 50 }), [{ x: 10, row: 0 }]); // never an empty row
  assert.deepEqual(legendLayout([], { left: 0, right: 10 }), []);
});

test("the eigenvalues say plainly which weights they were computed on", () => {
  assert.equal(weightsNote(null, 3), null);
  assert.equal(weightsNote(40, null), "Computed on the current weights (step 40).");
  assert.equal(weightsNote(40, 40), "Computed on the current weights (step 40).");
  const note = weightsNote(40, 10);
  assert.match(note, /^Computed on the current weights \(step 40\), not on those of step 10 that you picked: past weights are not kept/);
});

test("a density on a log axis is floored at a millionth of its peak", () => {
  const out = floorDensity([2, 1e-47, NaN, 1e-3]);
  assert.deepEqual(Array.from(out), [2, 2e-6, NaN, 1e-3]);
});

test("optimiserLines draws each optimiser's stability lines and says when none is known", () => {
  const nan = [NaN, NaN];
  const line = (key, ys) => ({ key, label: key, ys });
  const base = [line("lambda_max", [1, 2]), line("lambda_min", [0, 0])];
  // SGD: 2/η drawn, Adam's series (all NaN) dropped
  const sgd = optimiserLines([...base, line("threshold", [20, 20]), line("precond_lambda_max", nan), line("adam_threshold", nan)]);
  assert.deepEqual(sgd.map((l) => l.key), ["lambda_max", "lambda_min", "threshold"]);
  // Adam: no SGD line; the preconditioned sharpness and its threshold (float arrays from the codec too)
  const adam = optimiserLines([
    ...base,
    line("threshold", new Float32Array([NaN, NaN])),
    line("precond_lambda_max", new Float32Array([1.5, NaN])),
    line("adam_threshold", [38, 38]),
  ]);
  assert.deepEqual(adam.map((l) => l.key), ["lambda_max", "lambda_min", "precond_lambda_max", "adam_threshold"]);
  // neither known (RMSprop, or no learning rate): one entry that says so, in the first threshold's place
  const other = optimiserLines([...base, line("threshold", nan), line("adam_threshold", nan)]);
  assert.deepEqual(other.map((l) => [l.key, l.label]), [["lambda_max", "lambda_max"], ["lambda_min", "lambda_min"], ["threshold", NO_THRESHOLD_LABEL]]);
  // a history without the series at all (older records) and no threshold selected: nothing announced
  assert.deepEqual(optimiserLines([...base, line("precond_lambda_max", [])]).map((l) => l.key), ["lambda_max", "lambda_min"]);
  assert.equal(NO_THRESHOLD_LABEL, "no known stability threshold for this optimiser (or η unknown)");
});
