import assert from "node:assert/strict";
import { test } from "node:test";
import { tooltipPosition } from "../src/lib/tooltip.js";

test("the tooltip sits above and right of the pointer, clear of the tick labels below the plot", () => {
  const p = tooltipPosition({ x: 100, y: 300, width: 120, height: 60, boxWidth: 600 });
  assert.deepEqual(p, { left: 112, top: 228 });
  assert.ok(p.top + 60 < 300); // its bottom edge is above the pointer
});

test("below the pointer only without room above; to the left without room on the right", () => {
  assert.deepEqual(tooltipPosition({ x: 100, y: 30, width: 120, height: 60, boxWidth: 600 }), { left: 112, top: 50 });
  assert.deepEqual(tooltipPosition({ x: 550, y: 300, width: 120, height: 60, boxWidth: 600 }), { left: 418, top: 228 });
  assert.deepEqual(tooltipPosition({ x: 50, y: 300, width: 120, height: 60, boxWidth: 100 }), { left: 0, top: 228 });
});
