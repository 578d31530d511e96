import { test } from "node:test";
import assert from "node:assert/strict";
import { viewLifecycle } from "../src/lib/view.js";

test("dispose undoes model listeners and DOM listeners, runs cleanups, marks the view closed", () => {
  const handlers = new Map();
  const model = {
    on: (name, fn) => handlers.set(name, fn),
    off: (name, fn) => handlers.get(name) === fn && handlers.delete(name),
  };
  const target = new EventTarget();
  let clicks = 0;
  let cleaned = 0;
  const life = viewLifecycle(model);
  life.listen("change:x", () => {});
  life.on(target, "click", () => clicks++);
  life.onDispose(() => cleaned++);
  target.dispatchEvent(new Event("click"));
  assert.equal(handlers.size, 1);
  assert.equal(life.closed, false);
  life.dispose();
  target.dispatchEvent(new Event("click"));
  assert.deepEqual([handlers.size, clicks, cleaned, life.closed], [0, 1, 1, true]);
});
