import assert from "node:assert/strict";
import { test } from "node:test";
import { cellSummary } from "../src/lib/cell_summary.js";

test("a Hutchinson cell shows its mean with the standard error; an exact one does not", () => {
  const info = { mean: 1.25, std: 0.4, sem: 0.1, min: 0.5, max: 2, count: 16 };
  assert.equal(cellSummary(info, "hutchinson"), "mean 1.25 ± 0.1 (s.e.) · std 0.4 · min 0.5 · max 2 · n = 16");
  assert.equal(cellSummary(info, "exact"), "mean 1.25 · std 0.4 · min 0.5 · max 2 · n = 16");
  assert.equal(cellSummary({ ...info, sem: NaN, count: 1 }, "hutchinson").split(" · ")[0], "mean 1.25 ± – (s.e.)");
});
