import assert from "node:assert/strict";
import { test } from "node:test";
import { hostThemeVariables, isTransparent } from "../src/lib/theme.js";

test("transparent backgrounds are skipped when looking for the colour behind a view", () => {
  for (const c of ["", "transparent", "rgba(0, 0, 0, 0)", "rgba(17,17,17,0.0)", null]) assert.equal(isTransparent(c), true, c);
  for (const c of ["rgb(17, 17, 17)", "rgba(0, 0, 0, 0.5)", "#111111", "rgba(0, 0, 0, 1)"]) assert.equal(isTransparent(c), false, c);
});

test("hosts without JupyterLab's variables lend their own text and background colours", () => {
  assert.equal(hostThemeVariables({ jupyter: true, color: "rgb(0, 0, 0)", background: "rgb(255, 255, 255)" }), null);
  const dark = hostThemeVariables({ jupyter: false, color: "rgb(230, 230, 230)", background: "rgb(24, 24, 27)" });
  assert.equal(dark["--jp-ui-font-color1"], "rgb(230, 230, 230)");
  assert.equal(dark["--jp-ui-font-color2"], "rgba(230, 230, 230, 0.7)");
  assert.equal(dark["--jp-layout-color0"], "rgb(24, 24, 27)"); // tooltips and menus on the host's background
  assert.equal(dark["--jp-border-color1"], "rgba(230, 230, 230, 0.35)");
  // an unreadable colour or a transparent page: the light fallbacks
  const plain = hostThemeVariables({ jupyter: false, color: "", background: "rgba(0, 0, 0, 0)" });
  assert.equal(plain["--jp-ui-font-color1"], "#1f1f1f");
  assert.equal(plain["--jp-layout-color0"], "#ffffff");
});
