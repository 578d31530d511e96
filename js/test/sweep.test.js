import assert from "node:assert/strict";
import { test } from "node:test";
import { decadeTicks, logScale, MARGIN, sweepCsv, sweepGeometry } from "../src/lib/sweep_chart.js";

// A chart wire as tscope_widgets/widgets/_sweep_state.chart_wire sends it (null for NaN).
const CHART = {
  title: "lam against d",
  x_label: "d",
  y_label: "lam",
  x_range: [10, 1000],
  y_range: [0.01, 100],
  fit_range: null,
  marker_x: 100,
  dropped: 1,
  confidence: 0.95,
  guides: [{ exponent: 2, label: "∝ d^2", x: [10, 100], y: [0.1, 10], color: "#9e9e9e" }],
  groups: [
    {
      key: "L=1",
      label: "L=1: a = 1",
      color: "#4e79a7",
      x: [10, 100],
      mean: [1, 10],
      stderr: [null, 5],
      err_lo: [null, 5],
      err_hi: [null, 15],
      count: [1, 2],
      points_x: [10, 100, 100],
      points_y: [1, 5, 15],
      seeds: ["0", "0", "1"],
      fit: { exponent: 1, ci_low: 0.9, ci_high: 1.1, prefactor: 0.1, r_squared: 1, x: [10, 100], y: [1, 10] },
    },
    {
      key: "L=2",
      label: "L=2: no fit",
      color: "#f28e2b",
      x: [1000],
      mean: [50],
      stderr: [60],
      err_lo: [null],
      err_hi: [110],
      count: [3],
      points_x: [1000, 1000, 1000, 0],
      points_y: [1, 1, 148, 3],
      seeds: ["0", "1", "2", "3"],
      fit: null,
    },
  ],
};

test("log scales map decades to equal pixel steps and refuse non-positive domains", () => {
  const sx = logScale([10, 1000], [0, 200]);
  assert.equal(sx(10), 0);
  assert.equal(sx(100), 100);
  assert.equal(sx(1000), 200);
  assert.throws(() => logScale([0, 1], [0, 1]), /0 < lo < hi/);
  assert.throws(() => logScale([2, 1], [0, 1]), /0 < lo < hi/);
});

test("decade ticks inside the range, and the ends when fewer than two decades fit", () => {
  assert.deepEqual(decadeTicks(0.05, 200), [0.1, 1, 10, 100]);
  assert.deepEqual(decadeTicks(2, 5), [2, 5]);
  assert.deepEqual(decadeTicks(0.0267, 0.337), [0.0267, 0.1, 0.337]);
  assert.deepEqual(decadeTicks(1, 10), [1, 10]);
});

test("geometry: means, error bars (to the bottom without a lower end), runs, fits, guides, marker", () => {
  const g = sweepGeometry(CHART, 560, 320);
  const { plot } = g;
  assert.deepEqual(plot, { x: MARGIN.left, y: MARGIN.top, w: 560 - MARGIN.left - MARGIN.right, h: 320 - MARGIN.top - MARGIN.bottom });
  const bottom = plot.y + plot.h;
  const px = (v) => +(plot.x + (Math.log10(v) - 1) / 2 * plot.w).toFixed(2);
  const py = (v) => +(bottom - (Math.log10(v) + 2) / 4 * plot.h).toFixed(2);
  const [a, b] = g.groups;
  assert.deepEqual(a.means, [[px(10), py(1)], [px(100), py(10)]]);
  assert.deepEqual(a.bars, [[px(100), py(5), py(15)]]); // no bar for one seed
  assert.deepEqual(b.bars, [[px(1000), bottom, py(100)]]); // lower end missing: to the bottom; top clipped to the range
  assert.equal(a.runs.length, 3);
  assert.equal(b.runs.length, 3); // x = 0 cannot sit on a log axis
  assert.equal(a.fit, `M${px(10)},${py(1)}L${px(100)},${py(10)}`);
  assert.equal(b.fit, null);
  assert.deepEqual(g.guides[0], { label: "∝ d^2", color: "#9e9e9e", x1: px(10), y1: py(0.1), x2: px(100), y2: py(10) });
  assert.equal(g.marker, px(100));
  assert.equal(sweepGeometry({ ...CHART, marker_x: 5000 }, 560, 320).marker, null);
  assert.deepEqual(g.yTicks.map(([v]) => v), [0.01, 0.1, 1, 10, 100]);
});

test("no geometry before there is a range", () => {
  assert.equal(sweepGeometry(null, 560, 320), null);
  assert.equal(sweepGeometry({ ...CHART, x_range: null }, 560, 320), null);
});

test("CSV: one line per group and x, with the group's fit; null without groups", () => {
  const text = sweepCsv(CHART);
  const lines = text.trim().split("\r\n");
  assert.equal(lines[0], "group,d,mean lam,stderr,runs,exponent,ci_low,ci_high,prefactor");
  assert.equal(lines[1], "L=1,10,1,,1,1,0.9,1.1,0.1");
  assert.equal(lines[2], "L=1,100,10,5,2,1,0.9,1.1,0.1");
  assert.equal(lines[3], "L=2,1000,50,60,3,,,,");
  assert.equal(sweepCsv({ ...CHART, groups: [] }), null);
  assert.equal(sweepCsv(null), null);
});
