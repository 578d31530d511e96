import assert from "node:assert/strict";
import { test } from "node:test";
import { colorbarTicks, distinctLabels } from "../src/lib/scales.js";
import { fitDistance, fitView, projectPoint, sceneBox, surfaceAxes, surfaceSize } from "../src/lib/surface.js";

const close = (a, b, tol = 1e-9) => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

test("surface axes: round ticks of alpha, beta and the value, placed on the frame edges", () => {
  const alphas = [-0.03, -0.015, 0, 0.015, 0.03];
  const betas = [-1, 1];
  const axes = surfaceAxes({ alphas, betas, domain: [2.5, 4.5], height: 0.8 });
  const of = (axis) => axes.ticks.filter((t) => t.axis === axis);
  assert.deepEqual(of("alpha").map((t) => t.label), ["−0.03", "−0.02", "−0.01", "0", "0.01", "0.02", "0.03"]);
  for (const t of of("alpha")) {
    close(t.at[0], (2 * (t.value + 0.03)) / 0.06 - 1, 1e-12); // x of alpha on [-1, 1]
    assert.ok(t.at[2] > 1 && t.at[1] === 0); // in front of the front edge, on the base
  }
  assert.deepEqual(of("beta").map((t) => t.value), [-1, -0.5, 0, 0.5, 1]);
  for (const t of of("beta")) close(t.at[2], -t.value, 1e-12); // z = -beta on [-1, 1]
  assert.deepEqual(of("value").map((t) => t.value), [2.5, 3, 3.5, 4, 4.5]);
  for (const t of of("value")) close(t.at[1], (0.8 * (t.value - 2.5)) / 2, 1e-12); // height, loss up
  assert.deepEqual(axes.titles.map((t) => t.text), ["α", "β", "loss"]);
  assert.ok(axes.titles.find((t) => t.axis === "value").at[1] > 0.8); // above the top tick
  assert.equal(axes.segments.length % 6, 0); // whole segments
  assert.equal(axes.segments.length / 6, 3 + axes.ticks.length); // three axis lines and a mark per tick
  // a log value axis: decades, heights by log value
  const log = surfaceAxes({ alphas, betas, domain: [0.01, 100], log: true, height: 1 });
  const decades = log.ticks.filter((t) => t.axis === "value");
  assert.deepEqual(decades.map((t) => t.value), [0.01, 0.1, 1, 10, 100]);
  close(decades[2].at[1], 0.5, 1e-12);
  // no value axis over an empty domain (nothing computed yet), titles given by the caller
  const empty = surfaceAxes({ alphas, betas, domain: [NaN, NaN], titles: { value: "accuracy" } });
  assert.equal(empty.ticks.filter((t) => t.axis === "value").length, 0);
  assert.equal(empty.titles[2].text, "accuracy");
});

test("camera fit: every corner of the labelled box on screen, one of them at the margin, at any aspect", () => {
  const box = sceneBox(0.8);
  const target = [0, 0.4, 0];
  const direction = [1.9, 1.45, 2.3];
  for (const aspect of [0.5, 0.8, 1.1, 1.6, 3]) {
    const margin = 0.1;
    const distance = fitDistance(box, { target, direction, fov: 40, aspect, margin });
    const ndc = box.map((p) => projectPoint(p, { target, direction, distance, fov: 40, aspect }));
    const extent = Math.max(...ndc.flat().map(Math.abs));
    close(extent, 1 - margin, 1e-9); // tight: nothing clipped, no more room than the margin
    // the left edge in particular (the old view cut the front-left labels off)
    assert.ok(Math.min(...ndc.map(([x]) => x)) >= -(1 - margin) - 1e-12);
    // nearer would clip
    const nearer = box.map((p) => projectPoint(p, { target, direction, distance: 0.95 * distance, fov: 40, aspect }));
    assert.ok(Math.max(...nearer.flat().map(Math.abs)) > 1 - margin);
  }
  // wider views fit from nearer (the height binds), narrower ones from further away
  const at = (aspect) => fitDistance(box, { target, direction, fov: 40, aspect });
  assert.ok(at(0.5) > at(1) && at(1) >= at(3));
  assert.throws(() => fitDistance(box, { target, direction, fov: 40, aspect: 0 }), RangeError);
});

test("3D view size: as wide as the output area allows beside its colour bar, within bounds", () => {
  assert.deepEqual(surfaceSize(2000), { width: 504, height: 400 });
  assert.deepEqual(surfaceSize(504), { width: 400, height: 317 });
  assert.deepEqual(surfaceSize(100), { width: 240, height: 190 });
  assert.deepEqual(surfaceSize(NaN), { width: 504, height: 400 });
});

test("fitted and centred view: the labelled box fills the view to its margin and sits in the middle", () => {
  const box = sceneBox(0.8);
  const direction = [1.9, 1.45, 2.3];
  for (const aspect of [0.6, 1.1, 2]) {
    const view = { target: [0, 0.4, 0], direction, fov: 40, aspect, margin: 0.1 };
    const { target, distance } = fitView(box, view);
    const ndc = box.map((p) => projectPoint(p, { target, direction, distance, fov: 40, aspect }));
    const xs = ndc.map(([x]) => x);
    const ys = ndc.map(([, y]) => y);
    close(Math.max(...ndc.flat().map(Math.abs)), 0.9, 1e-9); // nothing beyond the margin, and tight
    close(Math.min(...xs) + Math.max(...xs), 0, 0.02); // centred left to right (no clipped left edge)
    close(Math.min(...ys) + Math.max(...ys), 0, 0.02); // and top to bottom
  }
});

test("tick labels tell neighbours apart", () => {
  assert.deepEqual(distinctLabels([2.405, 2.41, 2.415]), ["2.405", "2.41", "2.415"]);
  assert.deepEqual(distinctLabels([0, 0.5, 1]), ["0", "0.5", "1"]);
  const values = surfaceAxes({ alphas: [0, 1], betas: [0, 1], domain: [2.404, 2.416] }).ticks.filter((t) => t.axis === "value");
  const labels = values.map((t) => t.label);
  assert.equal(new Set(labels).size, labels.length, labels.join(" "));
  // the colour bars and the 1D slices' value axes (colorbarTicks) read the same
  const bar = colorbarTicks([2.404, 2.416], false, 3).map((t) => t.label);
  assert.equal(new Set(bar).size, bar.length, bar.join(" "));
  for (const t of colorbarTicks([2.404, 2.416], false, 3)) close(Number(t.label), t.value, 1e-12);
});
