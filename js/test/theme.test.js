import assert from "node:assert/strict";
import { test } from "node:test";
import { isTransparent } from "../src/lib/theme.js";

test("transparent backgrounds are skipped when looking for the colour behind a view", () => {
  for (const c of ["", "transparent", "rgba(0, 0, 0, 0)", "rgba(17,17,17,0.0)", null]) assert.equal(isTransparent(c), true, c);
  for (const c of ["rgb(17, 17, 17)", "rgba(0, 0, 0, 0.5)", "#111111", "rgba(0, 0, 0, 1)"]) assert.equal(isTransparent(c), false, c);
});
