import assert from "node:assert/strict";
import { test } from "node:test";
import { pictureHidingCSS } from "../src/lib/picture.js";

test("pictureHidingCSS hides the pictures of one model id", () => {
  assert.equal(
    pictureHidingCSS("4f2c9a_b-1"),
    '\n.tscope-static[data-picture-id="4f2c9a_b-1"] { display: none; }\n',
  );
});

test("pictureHidingCSS refuses ids that could break out of the selector", () => {
  for (const bad of ["", null, undefined, 42, 'a"] * { display: none } [x="', "a b", "x".repeat(129), "é"]) {
    assert.equal(pictureHidingCSS(bad), "", String(bad));
  }
});
