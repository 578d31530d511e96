import assert from "node:assert/strict";
import { test } from "node:test";
import { displayToken, maxTicksFor, positionLabel, thinTicks, tickStep, titlePositions, truncate } from "../src/lib/axes.js";

test("ticks are thinned to at most maxTicks, from position 0", () => {
  assert.deepEqual(thinTicks(5, 40), [0, 1, 2, 3, 4]);
  assert.equal(tickStep(512, 35), 15);
  const t = thinTicks(512, 35);
  assert.ok(t.length <= 35);
  assert.equal(t[0], 0);
  assert.ok(t.every((v, k) => k === 0 || v - t[k - 1] === 15));
  assert.ok(t[t.length - 1] < 512 && t[t.length - 1] + 15 >= 512);
  assert.deepEqual(thinTicks(3, 0), [0]);
  assert.equal(maxTicksFor(420, 12), 35);
  assert.equal(maxTicksFor(5, 12), 1);
});

test("tokens are made visible and truncated", () => {
  assert.equal(displayToken(" the"), "␣the");
  assert.equal(displayToken("a\nb\t"), "a⏎b⇥");
  assert.equal(displayToken("\u0001"), "�");
  assert.equal(truncate("abcdefgh", 5), "abcd…");
  assert.equal(truncate("abc", 5), "abc");
  assert.equal(truncate("😀😀😀", 2), "😀…");
});

test("position labels read i:token, or i alone", () => {
  const tokens = ["<bos>", " cat", "", "supercalifragilistic"];
  assert.equal(positionLabel(0, tokens), "0:<bos>");
  assert.equal(positionLabel(1, tokens), "1:␣cat");
  assert.equal(positionLabel(2, tokens), "2");
  assert.equal(positionLabel(3, tokens, 6), "3:super…");
  assert.equal(positionLabel(7, tokens), "7");
  assert.equal(positionLabel(4, []), "4");
});

test("axis titles sit just beyond the longest tick labels, inside the canvas", () => {
  const layout = { x: 112, y: 8, width: 170, height: 170, totalWidth: 378, totalHeight: 282 };
  // short labels ("3", 6 px): the titles come close, not at the margins' far edges (about 90 px away)
  const near = titlePositions(layout, 6, 6);
  assert.equal(near.yTitleCenter, 112 - 5 - 6 - 6 - 6);
  assert.equal(near.xTitleBottom, 8 + 170 + 5 + 6 + 6 + 12);
  assert.ok(112 - 5 - 6 - near.yTitleCenter <= 20 && near.xTitleBottom - (8 + 170 + 5 + 6) <= 20);
  // long labels: clamped to the canvas
  const far = titlePositions(layout, 200, 200);
  assert.equal(far.yTitleCenter, 8);
  assert.equal(far.xTitleBottom, 280);
});
