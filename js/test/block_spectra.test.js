import assert from "node:assert/strict";
import { test } from "node:test";
import { schemeTableau10 } from "d3-scale-chromatic";
import { densityLines, distanceText, sharedDomain, TYPE_NAMES, TYPE_ORDER, typePoints, typeRows, typeStepLines } from "../src/lib/block_spectra_data.js";

const LABELS = ["embed", "block0.attn.q", "block0.ln1"];
// [G = 3, X = 4], row-major; row 1 has a value far below its peak
const DENS = Float32Array.from([0.1, 0.4, 0.4, 0.1, 1e-20, 0.5, 0.5, 0, 0.25, 0.25, 0.25, 0.25]);

test("density lines: the selected blocks in block order, each in its block's colour", () => {
  const lines = densityLines(LABELS, DENS, ["block0.ln1", "embed"], false);
  assert.deepEqual(lines.map((l) => [l.label, l.index, l.color]), [
    ["embed", 0, schemeTableau10[0]],
    ["block0.ln1", 2, schemeTableau10[2]],
  ]);
  assert.deepEqual(Array.from(lines[1].ys), [0.25, 0.25, 0.25, 0.25]);
  assert.deepEqual(densityLines(LABELS, DENS, [], false), []);
  assert.deepEqual(densityLines([], new Float32Array(0), ["x"], true), []);
  assert.throws(() => densityLines(LABELS, new Float32Array(7), LABELS, false), RangeError);
});

test("on a log axis a density is floored at 1e-6 of its peak (as figures.block_spectra)", () => {
  const [line] = densityLines(LABELS, DENS, ["block0.attn.q"], true);
  assert.equal(line.ys[0], 0.5 * 1e-6);
  assert.equal(line.ys[3], 0.5 * 1e-6);
  assert.equal(line.ys[1], 0.5);
  const linear = densityLines(LABELS, DENS, ["block0.attn.q"], false)[0];
  assert.equal(linear.ys[3], 0);
});

test("side by side: one y range over every line (positive values on a log axis)", () => {
  const lines = densityLines(LABELS, DENS, LABELS, false);
  assert.deepEqual(sharedDomain(lines, false), [0, 0.5]);
  const logged = densityLines(LABELS, DENS, LABELS, true);
  const [lo, hi] = sharedDomain(logged, true);
  assert.equal(hi, 0.5);
  assert.ok(Math.abs(lo - 0.5e-6) < 1e-12);
  assert.equal(sharedDomain([], false), null);
});

test("type points follow the Sharpness Disparity order, one point per type in its fixed colour", () => {
  const t = { types: ["embed", "qk", "vo", "mlp", "norm"], values: [0.1, 1, 8, 3, 50] };
  const p = typePoints(t);
  assert.deepEqual(p.names, ["Emb", "QK", "FFN", "VO", "Norm"]);
  assert.deepEqual(p.xs, [0, 1, 2, 3, 4]);
  assert.deepEqual(p.series.map((s) => s.label), ["S(Emb)", "S(QK)", "S(FFN)", "S(VO)", "S(Norm)"]);
  assert.deepEqual(p.series[3].ys.map((v) => (Number.isNaN(v) ? null : v)), [null, null, null, 8, null]);
  assert.deepEqual(p.series.map((s) => s.color), [0, 1, 2, 3, 4].map((k) => schemeTableau10[k]));
  const some = typePoints({ types: ["head", "qk"], values: [2, 1] });
  assert.deepEqual(some.names, ["QK", "head"]);
  assert.equal(some.series[1].color, schemeTableau10[TYPE_ORDER.indexOf("head")]);
  assert.deepEqual(typePoints(null), { xs: [], names: [], series: [] });
  assert.throws(() => typePoints({ types: ["qk"], values: [1, 2] }), RangeError);
  assert.equal(TYPE_NAMES.mlp, "FFN");
});

test("type table rows: ratio to the previous type present, and the verdict", () => {
  const t = { types: ["embed", "qk", "mlp"], values: [0.5, 1, 4], counts: [1, 2, 2], ratios: { "qk/embed": 2, "mlp/qk": 4 }, follows: true };
  const { rows, follows } = typeRows(t);
  assert.equal(follows, true);
  assert.deepEqual(rows.map((r) => [r.name, r.count, r.value, r.ratio]), [
    ["Emb", 1, 0.5, null],
    ["QK", 2, 1, 2],
    ["FFN", 2, 4, 4],
  ]);
  assert.deepEqual(typeRows(null), { rows: [], follows: null });
});

test("distance hover text names both blocks", () => {
  const D = [0, 0.25, 0.5, 0.25, 0, 0.125, 0.5, 0.125, 0];
  assert.deepEqual(distanceText(LABELS, D, 0, 2), ["a: embed", "b: block0.ln1", "JS(a, b) = 0.500"]);
});

test("type lines over training: one per type in the order sent, in the type's colour", () => {
  const t = { types: ["qk", "mlp"], values: { data: Float32Array.from([1, 2, 3, 4, 5, 6]), shape: [2, 3] } };
  const lines = typeStepLines(t);
  assert.deepEqual(lines.map((l) => [l.label, l.color, Array.from(l.ys)]), [
    ["S(QK)", schemeTableau10[1], [1, 2, 3]],
    ["S(FFN)", schemeTableau10[2], [4, 5, 6]],
  ]);
  assert.deepEqual(typeStepLines(null), []);
  assert.throws(() => typeStepLines({ types: ["qk"], values: { data: [1, 2], shape: [2, 1] } }), RangeError);
});
