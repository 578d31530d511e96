import assert from "node:assert/strict";
import { test } from "node:test";
import {
  CORRECTIONS,
  FADED_ALPHA,
  cellTestLines,
  fadeRGBA,
  jointDomain,
  sharedBins,
  shownTitle,
  significanceText,
  symmetricDomain,
} from "../src/lib/comparison.js";

test("non-significant tested cells are blended towards the background; significant and untested ones are not", () => {
  const values = [1, -2, NaN, 0.5];
  const significant = Uint8Array.from([1, 0, 0, 0]);
  const rgba = new Uint8ClampedArray([200, 0, 0, 255, 0, 0, 200, 255, 99, 99, 99, 255, 100, 100, 100, 255]);
  const faded = fadeRGBA(rgba, values, significant, [255, 255, 255, 255]);
  assert.equal(faded, 2);
  assert.deepEqual([...rgba.slice(0, 4)], [200, 0, 0, 255]); // significant: kept
  const blend = (c) => Math.round(FADED_ALPHA * c + (1 - FADED_ALPHA) * 255);
  assert.deepEqual([...rgba.slice(4, 8)], [blend(0), blend(0), blend(200), 255]);
  assert.deepEqual([...rgba.slice(8, 12)], [99, 99, 99, 255]); // NaN (not tested): its grey stays
  assert.deepEqual([...rgba.slice(12, 16)], [blend(100), blend(100), blend(100), 255]);
  // more significant cells (a larger alpha) fade fewer
  const all = new Uint8ClampedArray(16);
  assert.equal(fadeRGBA(all, values, Uint8Array.from([1, 1, 0, 1]), [0, 0, 0, 255]), 0);
  assert.throws(() => fadeRGBA(new Uint8ClampedArray(8), values, significant, [0, 0, 0, 255]), RangeError);
  assert.throws(() => fadeRGBA(rgba, values, [1, 0], [0, 0, 0, 255]), RangeError);
});

test("the difference map's domain is symmetric about zero; the two means share one domain", () => {
  assert.deepEqual(symmetricDomain([0.5, -3, NaN, 2]), [-3, 3]);
  assert.deepEqual(symmetricDomain([NaN, 0]), [-1, 1]);
  assert.deepEqual(jointDomain([1, 2], [0.5, 8], false), [0.5, 8]);
  assert.deepEqual(jointDomain([0, 2], [NaN, 8], true), [2, 8]); // log: positive values only
});

test("texts name the runs, the level and the correction", () => {
  assert.equal(shownTitle("difference", ["a", "b"]), "a − b");
  assert.equal(shownTitle("log_ratio", ["base", "tuned"]), "ln(base / tuned)");
  assert.equal(shownTitle("effect_size", ["a", "b"]), "Hedges' g (a vs b)");
  assert.equal(significanceText(3, 20, 0.05, "fdr_bh"), "3 of 20 tested cells significant (q < 0.05, Benjamini–Hochberg (FDR))");
  assert.equal(significanceText(1, 20, 0.01, null), "1 of 20 tested cells significant (p < 0.01, none)");
  assert.deepEqual(CORRECTIONS, ["fdr_bh", "bonferroni", null]);
  const lines = cellTestLines(
    { mean_a: 2, mean_b: 1, count_a: 8, count_b: 9, difference: 1, effect_size: 0.8, t: 2.5, df: 14.2, p: 0.02, q: 0.04, significant: true },
    ["a", "b"],
  );
  assert.equal(lines[0], "a: mean 2 (n = 8)");
  assert.equal(lines[3], "Welch t = 2.5, df = 14.2, p = 0.02, q = 0.04 (significant)");
  assert.equal(cellTestLines({ count_a: 1, count_b: 0, t: null }, ["a", "b"])[3].startsWith("Welch t = –"), true);
});

test("both samples are binned on common edges, every finite value counted once", () => {
  const { edges, countsA, countsB } = sharedBins([0, 1, 2, NaN], [2, 3, 4], 4);
  assert.deepEqual(edges, [0, 1, 2, 3, 4]);
  assert.deepEqual(countsA, [1, 1, 1, 0]);
  assert.deepEqual(countsB, [0, 0, 1, 2]); // the top edge goes into the last bin
  const constant = sharedBins([5, 5], [5], 2);
  assert.deepEqual(constant.countsA, [0, 2]);
  assert.equal(constant.edges[0] < 5 && constant.edges[2] > 5, true);
  assert.deepEqual(sharedBins([], [NaN]).edges, []);
});
