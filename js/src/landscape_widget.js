// Front end of tscope_widgets.widgets.landscape.LandscapeWidget (anywidget ESM module).
//
// Python owns the data: the grid coordinates `_alphas [A]`, `_betas [B]`, the values `_loss` and
// `_accuracy` ([A, B] float32, NaN where not computed yet), the projected trajectory, the quadratic
// model along eigenvector directions, and the job status. This view draws the heatmap with contours,
// colour bar, trajectory and the two 1D slices through the selected grid point (taken from the grid,
// nothing is recomputed), or a 3D surface of the same grid. It writes back only view state
// (selected_point, log_scale, view, quantity, show_contours); pause/resume/stop go as custom messages.
// The 3D code (three.js) is not in this bundle: Python sends it as `_surface_esm` once a view asks
// for 3D. Every render() keeps its own state and returns a cleanup, so the widget can be shown twice.
//
// Each output showing the widget is followed by a static picture of it (see tscope_widgets/widgets/_display.py);
// while a view is in the page it hides every picture of its model (lib/picture.js).
import { baseCss } from "./lib/style.js";
import { viewLifecycle } from "./lib/view.js";
import { surfaceSize } from "./lib/surface.js";
import { scaleLinear } from "d3-scale";
import { decode, decodeTree } from "./lib/codec.js";
import { drawColorbar } from "./lib/colorbar.js";
import { contourLevels, contourLines } from "./lib/contours.js";
import { fillSelect, h, sizeCanvas } from "./lib/dom.js";
import { fillRGBA, paintGrid } from "./lib/heatmap.js";
import { lineChart } from "./lib/lines.js";
import {
  countFinite,
  focusPoint,
  gridCellRect,
  gridImage,
  gridLayout,
  gridPointAt,
  gridScales,
  isOrigin,
  slicesThrough,
} from "./lib/grid.js";
import { pictureHidingCSS } from "./lib/picture.js";
import { colorDomain, colorIndexer, colormapLUT, formatValue, resolveLog } from "./lib/scales.js";
import { jobControls } from "./lib/job_controls.js";
import { cssToRGBA, themeColors } from "./lib/theme.js";
import { columnsCsv, downloadButtons } from "./lib/download.js";
import { showTooltip } from "./lib/tooltip.js";
import { labelledPoints, pointNear, thinLabels, trajectoryPixels } from "./lib/trajectory.js";

const LUT = colormapLUT("viridis", 256);
const MARGIN = { left: 64, top: 10, right: 104, bottom: 46 };
const PLOT = { width: 400, height: 400 };

const VIEW_TITLES = { "2d": "heatmap + contours", "3d": "3D surface" };
const SCALE_TITLES = { auto: "auto", log: "log", linear: "linear" };
const CONTOUR_COUNT = 10;
const TRAJECTORY_COLOR = "#e91e63"; // as in the static picture and the Bokeh export
const MODEL_COLOR = "#ff7f0e"; // the quadratic model on the slices

const CSS = `${baseCss(".tscope-landscape")}
.tscope-landscape .tscope-main { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.tscope-landscape .tscope-plot { position: relative; }
.tscope-landscape .tscope-heatmap { display: block; cursor: crosshair; }
.tscope-landscape .tscope-surface { position: relative; display: flex; align-items: flex-start; gap: 4px; }
.tscope-landscape .tscope-surface canvas { display: block; cursor: grab; }
.tscope-landscape .tscope-tooltip { position: absolute; display: none; pointer-events: none; z-index: 10;
  white-space: pre; font-size: 11px; padding: 3px 6px; border-radius: 3px;
  background: var(--jp-layout-color0, #fff); border: 1px solid var(--jp-border-color1, #9e9e9e);
  box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.tscope-landscape .tscope-detail { width: 300px; }
.tscope-landscape .tscope-detail h4 { margin: 0; font-size: inherit; display: flex; justify-content: space-between; }
.tscope-landscape .tscope-caption { color: var(--jp-ui-font-color2, #616161); font-size: 11px; margin: 6px 0 0; max-width: 560px; }
.tscope-landscape .tscope-hint { color: var(--jp-ui-font-color2, #616161); }
.tscope-landscape .tscope-surface-note { color: var(--jp-ui-font-color2, #616161); padding: 24px 12px; max-width: 460px; }
.tscope-landscape svg.tscope-chart { display: block; overflow: visible; }
`;

// ----- the 3D module: imported once per page from the code Python sends
const surfaceModules = new Map();
function loadSurfaceModule(code) {
  let promise = surfaceModules.get(code);
  if (!promise) {
    const url = URL.createObjectURL(new Blob([code], { type: "text/javascript" }));
    promise = import(/* webpackIgnore: true */ url).finally(() => URL.revokeObjectURL(url));
    surfaceModules.set(code, promise);
  }
  return promise;
}

/** Why this browser cannot show WebGL 2, or "" if it can. */
function webgl2Problem() {
  try {
    const gl = document.createElement("canvas").getContext("webgl2");
    if (!gl) return "this browser offers no WebGL 2 context (hardware acceleration off, or a headless browser)";
    gl.getExtension("WEBGL_lose_context")?.loseContext();
    return "";
  } catch (err) {
    return String(err?.message ?? err);
  }
}

function render({ model, el }) {
  const life = viewLifecycle(model);
  const { on, listen } = life;

  // ----- DOM
  const quantitySelect = h("select", { "aria-label": "quantity" });
  const viewSelect = h("select", { "aria-label": "view" });
  const scaleSelect = h("select", { "aria-label": "colour scale" });
  const contourBox = h("input", { type: "checkbox", "aria-label": "contour lines" });
  const job = jobControls({ unit: "row", keeps: "the rows done", counted: "rows" });
  const downloads = downloadButtons({
    container: () => plot,
    theme: () => theme,
    name: () => ["landscape", quantity(), model.get("view")],
    csv: () => gridCsv(),
  });
  const toolbar = h(
    "div",
    { class: "tscope-toolbar" },
    h("label", {}, "show", quantitySelect),
    h("label", {}, "view", viewSelect),
    h("label", {}, "colour", scaleSelect),
    h("label", {}, contourBox, "contours"),
    job.buttons,
    downloads.element,
  );
  const statusLine = job.statusLine;
  const canvas = h("canvas", { class: "tscope-heatmap" });
  const surfaceHost = h("div", { class: "tscope-surface-host" });
  const surfaceBar = h("canvas", { class: "tscope-surface-bar" });
  const surfacePane = h("div", { class: "tscope-surface" }, surfaceHost, surfaceBar);
  const tooltip = h("div", { class: "tscope-tooltip" });
  const plot = h("div", { class: "tscope-plot" }, canvas, surfacePane, tooltip);
  const plotCaption = h("p", { class: "tscope-caption" });
  const detailPane = h("div", { class: "tscope-detail" });
  const root = h(
    "div",
    { class: "tscope-landscape tscope-root" },
    h("style", {}, CSS + pictureHidingCSS(model.get("picture_id"))),
    toolbar,
    statusLine,
    h("div", { class: "tscope-main" }, h("div", {}, plot, plotCaption), detailPane),
  );
  el.append(root);

  // ----- view state (this render only)
  const scratch = document.createElement("canvas");
  const probe = document.createElement("canvas");
  probe.width = probe.height = 1;
  let theme = themeColors(root);
  let grid = null; // {alphas, betas, A, B, values (selected quantity), loss, accuracy}
  let trajectory = null; // {points: Float32Array [T*2], steps}
  let layout = null;
  let scales = null;
  let trackPixels = [];
  let surface = null; // the 3D view, while shown
  let surfaceState = "off"; // off | loading | loading-module | ready | error
  let surfaceDims = surfaceSize(NaN);
  let webglProblem = null;
  let paints = 0;

  const quantity = () => model.get("quantity");
  // "auto": log where the values span decades (the explorer's rule, figures.charts.resolve_log)
  const useLog = () => resolveLog(model.get("log_scale"), grid ? grid.values : []);
  const scaleKey = () => {
    const v = model.get("log_scale");
    return v === "auto" ? "auto" : v ? "log" : "linear";
  };
  const titles = () => model.get("quantity_titles") ?? {};
  const quantityTitle = () => titles()[quantity()] ?? quantity();
  const directionLabels = () => model.get("direction_labels") ?? ["", ""];
  const axisTitle = (symbol, k) => (directionLabels()[k] ? `${symbol} · ${directionLabels()[k]}` : symbol);

  const dirty = new Set();
  const parts = { controls: drawControls, status: drawStatus, main: drawMain, detail: drawDetail };
  function schedule(...names) {
    if (dirty.size === 0) {
      queueMicrotask(() => {
        if (life.closed) return;
        const todo = [...dirty];
        dirty.clear();
        theme = themeColors(root);
        for (const name of Object.keys(parts)) if (todo.includes(name)) parts[name]();
      });
    }
    for (const n of names) dirty.add(n);
  }

  // The grid as CSV, one line per point: alpha, beta, loss (and accuracy); empty where not computed yet.
  function gridCsv() {
    if (!grid) return null;
    const { A, B, alphas, betas, loss, accuracy } = grid;
    const n = A * B;
    const [d1, d2] = directionLabels();
    const columns = [
      [d1 ? `alpha (${d1})` : "alpha", Array.from({ length: n }, (_, k) => alphas[Math.floor(k / B)])],
      [d2 ? `beta (${d2})` : "beta", Array.from({ length: n }, (_, k) => betas[k % B])],
      ["loss", Array.from(loss)],
    ];
    if (accuracy) columns.push(["accuracy", Array.from(accuracy)]);
    return columnsCsv(columns);
  }

  function readArrays() {
    const alphas = decode(model.get("_alphas"));
    const betas = decode(model.get("_betas"));
    const loss = decode(model.get("_loss"));
    const accuracy = decode(model.get("_accuracy"));
    if (!alphas || !betas || !loss) {
      grid = null;
    } else {
      const [A, B] = [alphas.data.length, betas.data.length];
      const values = quantity() === "accuracy" && accuracy ? accuracy.data : loss.data;
      grid = values.length === A * B ? { alphas: alphas.data, betas: betas.data, A, B, values, loss: loss.data, accuracy: accuracy?.data ?? null } : null;
    }
    const t = decodeTree(model.get("_trajectory"));
    trajectory = t && t.points ? { points: t.points.data, steps: t.steps ? t.steps.data : null, label: t.label ?? "trajectory" } : null;
  }

  function drawControls() {
    fillSelect(quantitySelect, model.get("quantity_options") ?? [], quantity(), (q) => q);
    fillSelect(viewSelect, ["2d", "3d"], model.get("view"), (v) => VIEW_TITLES[v]);
    fillSelect(scaleSelect, Object.keys(SCALE_TITLES), scaleKey(), (k) => SCALE_TITLES[k]);
    contourBox.checked = Boolean(model.get("show_contours"));
    contourBox.disabled = model.get("view") === "3d";
  }

  function drawStatus() {
    job.draw(model, root);
  }

  function drawMain() {
    const three = model.get("view") === "3d";
    canvas.style.display = three ? "none" : "";
    surfacePane.style.display = three ? "" : "none";
    if (three) drawSurface();
    else {
      closeSurface();
      drawHeatmap();
    }
    drawCaption(three);
    paints += 1;
    root.dataset.paints = String(paints); // a marker for browser tests: bumps after every repaint
  }

  function domainOf(values) {
    return colorDomain(values, useLog());
  }

  function drawHeatmap() {
    if (!grid) {
      layout = scales = null;
      const ctx = sizeCanvas(canvas, PLOT.width + MARGIN.left + MARGIN.right, 60, theme.bg);
      ctx.fillStyle = theme.fg2;
      ctx.font = `12px ${theme.font}`;
      ctx.fillText("waiting for the first row…", 12, 30);
      return;
    }
    const { A, B, alphas, betas, values } = grid;
    layout = gridLayout({ A, B, ...PLOT, margin: MARGIN });
    scales = gridScales(layout, alphas, betas);
    const ctx = sizeCanvas(canvas, layout.totalWidth, layout.totalHeight, theme.bg);
    const log = useLog();
    const domain = domainOf(values);
    const image = gridImage(values, A, B);
    const rgba = fillRGBA(new Uint8ClampedArray(4 * A * B), image, colorIndexer(domain, { log }), LUT, {
      nan: cssToRGBA(theme.nan, probe),
      nonpositive: cssToRGBA(theme.bg, probe),
    });
    paintGrid(ctx, { x: layout.x, y: layout.y, width: layout.width, height: layout.height, rows: B, cols: A }, rgba, scratch);

    ctx.save();
    ctx.beginPath();
    ctx.rect(layout.x, layout.y, layout.width, layout.height);
    ctx.clip();
    let levels = [];
    if (model.get("show_contours") && countFinite(values) >= 4) {
      levels = contourLevels(domain, { count: CONTOUR_COUNT, log });
      ctx.strokeStyle = "rgba(255, 255, 255, 0.75)";
      ctx.lineWidth = 1;
      for (const { lines } of contourLines(image, A, B, levels, { log })) {
        for (const line of lines) {
          ctx.beginPath();
          line.forEach(([gx, gy], k) => {
            const px = layout.x + gx * layout.cw;
            const py = layout.y + gy * layout.ch;
            if (k === 0) ctx.moveTo(px, py);
            else ctx.lineTo(px, py);
          });
          ctx.stroke();
        }
      }
    }
    drawFocus(ctx);
    drawOrigin(ctx);
    drawTrajectory(ctx);
    ctx.restore();

    ctx.strokeStyle = theme.fg2;
    ctx.lineWidth = 1;
    ctx.strokeRect(layout.x - 0.5, layout.y - 0.5, layout.width + 1, layout.height + 1);
    drawNumericAxes(ctx);
    drawColorbar(ctx, {
      x: layout.x + layout.width + 12,
      y: layout.y,
      width: 12,
      height: layout.height,
      lut: LUT,
      domain,
      log,
      title: quantityTitle() + (log ? " (log)" : ""),
      theme,
    });
    drawLevelMarks(ctx, domain, levels, log);
    canvas.dataset.rows = String(model.get("rows_done") ?? 0);
    canvas.dataset.contourLevels = String(levels.length);
    canvas.dataset.trajectoryPoints = String(trackPixels.length);
  }

  function drawLevelMarks(ctx, domain, levels, log) {
    if (!levels.length) return;
    const [lo, hi] = log ? domain.map(Math.log) : domain;
    const x = layout.x + layout.width + 12;
    ctx.save();
    ctx.strokeStyle = "rgba(255, 255, 255, 0.9)";
    ctx.lineWidth = 1;
    for (const level of levels) {
      const t = ((log ? Math.log(level) : level) - lo) / (hi - lo);
      const y = layout.y + layout.height - t * layout.height;
      ctx.beginPath();
      ctx.moveTo(x, y);
      ctx.lineTo(x + 12, y);
      ctx.stroke();
    }
    ctx.restore();
  }

  function drawNumericAxes(ctx) {
    const { x, y, width, height } = layout;
    const { alphas, betas } = grid;
    ctx.save();
    ctx.fillStyle = theme.fg;
    ctx.strokeStyle = theme.fg2;
    ctx.font = `10px ${theme.font}`;
    ctx.lineWidth = 1;
    const ends = (v) => [v[0], v[v.length - 1]];
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const a of scaleLinear().domain(ends(alphas)).ticks(6)) {
      const px = scales.x(a);
      if (px < x - 0.5 || px > x + width + 0.5) continue;
      ctx.beginPath();
      ctx.moveTo(px, y + height);
      ctx.lineTo(px, y + height + 4);
      ctx.stroke();
      ctx.fillText(formatValue(a), px, y + height + 6);
    }
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const b of scaleLinear().domain(ends(betas)).ticks(6)) {
      const py = scales.y(b);
      if (py < y - 0.5 || py > y + height + 0.5) continue;
      ctx.beginPath();
      ctx.moveTo(x - 4, py);
      ctx.lineTo(x, py);
      ctx.stroke();
      ctx.fillText(formatValue(b), x - 6, py);
    }
    ctx.font = `11px ${theme.font}`;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(axisTitle("α", 0), x + width / 2, layout.totalHeight - 2);
    ctx.translate(12, y + height / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(axisTitle("β", 1), 0, 0);
    ctx.restore();
  }

  function drawFocus(ctx) {
    const { i, j } = focusPoint(grid.alphas, grid.betas, model.get("selected_point"));
    if (i < 0 || j < 0) return;
    const r = gridCellRect(layout, i, j);
    ctx.save();
    ctx.strokeStyle = "rgba(255, 255, 255, 0.55)";
    ctx.setLineDash([3, 3]);
    ctx.beginPath();
    ctx.moveTo(r.x + r.w / 2, layout.y);
    ctx.lineTo(r.x + r.w / 2, layout.y + layout.height);
    ctx.moveTo(layout.x, r.y + r.h / 2);
    ctx.lineTo(layout.x + layout.width, r.y + r.h / 2);
    ctx.stroke();
    ctx.restore();
    if (model.get("selected_point")) {
      for (const [color, width, pad] of [["rgba(0, 0, 0, 0.7)", 3, 1.5], ["#ffffff", 1.5, 1.5]]) {
        ctx.strokeStyle = color;
        ctx.lineWidth = width;
        ctx.strokeRect(r.x - pad, r.y - pad, r.w + 2 * pad, r.h + 2 * pad);
      }
    }
  }

  function drawOrigin(ctx) {
    const px = scales.x(0);
    const py = scales.y(0);
    if (!(px >= layout.x && px <= layout.x + layout.width && py >= layout.y && py <= layout.y + layout.height)) return;
    ctx.save();
    for (const [color, width] of [["rgba(0, 0, 0, 0.6)", 3], ["#ffffff", 1.5]]) {
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.beginPath();
      ctx.moveTo(px - 6, py);
      ctx.lineTo(px + 6, py);
      ctx.moveTo(px, py - 6);
      ctx.lineTo(px, py + 6);
      ctx.stroke();
    }
    ctx.restore();
  }

  function drawTrajectory(ctx) {
    trackPixels = trajectory ? trajectoryPixels(trajectory.points, trajectory.steps, scales) : [];
    if (trackPixels.length === 0) return;
    ctx.save();
    ctx.lineJoin = "round";
    for (const [color, width] of [["rgba(0, 0, 0, 0.5)", 3.5], [TRAJECTORY_COLOR, 1.75]]) {
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.beginPath();
      trackPixels.forEach((p, k) => (k === 0 ? ctx.moveTo(p.x, p.y) : ctx.lineTo(p.x, p.y)));
      ctx.stroke();
    }
    const last = trackPixels.length - 1;
    trackPixels.forEach((p, k) => {
      ctx.beginPath();
      ctx.arc(p.x, p.y, k === 0 || k === last ? 4 : 2.5, 0, 2 * Math.PI);
      ctx.fillStyle = k === 0 ? "#ffffff" : TRAJECTORY_COLOR;
      ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
      ctx.lineWidth = 1;
      ctx.fill();
      ctx.stroke();
    });
    ctx.font = `10px ${theme.font}`;
    ctx.textAlign = "left";
    ctx.textBaseline = "bottom";
    for (const k of thinLabels(trackPixels, labelledPoints(trackPixels.length, 6))) {
      const p = trackPixels[k];
      const text = `${p.step}`;
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(0, 0, 0, 0.65)";
      ctx.strokeText(text, p.x + 5, p.y - 3);
      ctx.fillStyle = "#ffffff";
      ctx.fillText(text, p.x + 5, p.y - 3);
    }
    ctx.restore();
  }

  function drawCaption(three) {
    const labels = directionLabels();
    const parts = [`α: ${labels[0] || "direction 1"}; β: ${labels[1] || "direction 2"}; (0, 0) is the model's own parameters (+).`];
    if (trajectory) parts.push(`Path: ${trajectory.label}, projected onto the plane (white dot: first step; numbers: steps).`);
    parts.push(
      three
        ? `3D: α runs along the front edge, β from front to back; height and colour: ${quantityTitle()}. Drag to rotate, scroll to zoom.`
        : "Click a cell for the 1D slices through it.",
    );
    plotCaption.textContent = parts.join(" ");
  }

  // ----- 3D
  function closeSurface() {
    if (surface) {
      surface.dispose();
      surface = null;
    }
    if (surfaceState !== "off") {
      surfaceState = "off";
      surfaceHost.replaceChildren();
      delete root.dataset.surface;
    }
  }

  function surfaceNote(text, state) {
    surfaceState = state;
    root.dataset.surface = state;
    surfaceHost.replaceChildren(h("div", { class: "tscope-surface-note", style: `width:${surfaceDims.width}px` }, text));
    surfaceBar.style.display = "none";
  }

  function drawSurface() {
    if (surfaceState === "error") return;
    if (surface) {
      updateSurface();
      return;
    }
    webglProblem ??= webgl2Problem(); // asked once per view: each probe costs a WebGL context
    const problem = model.get("_surface_error") || webglProblem;
    if (problem) {
      surfaceNote(`3D view unavailable: ${problem}. The heatmap (view: heatmap + contours) keeps working.`, "error");
      return;
    }
    const code = model.get("_surface_esm");
    if (!code) {
      surfaceNote("loading the 3D view…", "loading");
      return; // Python sends the code in reply to view = "3d"; change:_surface_esm redraws
    }
    if (surfaceState === "loading-module") return;
    surfaceNote("loading the 3D view…", "loading-module");
    loadSurfaceModule(code)
      .then((module) => {
        if (life.closed || model.get("view") !== "3d" || surfaceState !== "loading-module") return;
        surfaceHost.replaceChildren();
        surfaceDims = surfaceSize(root.clientWidth);
        surface = module.createSurfaceView(surfaceHost, { ...surfaceDims, theme });
        surfaceState = "ready";
        root.dataset.surface = "ready";
        updateSurface();
      })
      .catch((err) => {
        if (surface) {
          surface.dispose();
          surface = null;
        }
        if (!life.closed) surfaceNote(`3D view unavailable: ${err?.message ?? err}. The heatmap (view: heatmap + contours) keeps working.`, "error");
      });
  }

  function updateSurface() {
    if (!surface) return;
    const dims = surfaceSize(root.clientWidth);
    if (dims.width !== surfaceDims.width || dims.height !== surfaceDims.height) {
      surfaceDims = dims;
      surface.resize(dims.width, dims.height);
    }
    root.dataset.surfaceSize = `${dims.width}x${dims.height}`;
    if (!grid) return;
    const { A, B, alphas, betas, values } = grid;
    const domain = domainOf(values);
    surface.setTheme(theme);
    drawSurfaceBar(domain);
    const quads = surface.update({
      values,
      A,
      B,
      alphas,
      betas,
      domain,
      log: useLog(),
      lut: LUT,
      trajectory: trajectory ? trajectory.points : null,
      valueTitle: quantity(),
    });
    root.dataset.surfaceQuads = String(quads);
  }

  function drawSurfaceBar(domain) {
    const [width, height] = [96, surfaceDims.height];
    surfaceBar.style.display = "";
    const ctx = sizeCanvas(surfaceBar, width, height);
    const log = useLog();
    drawColorbar(ctx, { x: 4, y: 40, width: 12, height: height - 80, lut: LUT, domain, log, title: quantityTitle() + (log ? " (log)" : ""), theme });
  }

  // ----- 1D slices
  function drawDetail() {
    if (!grid) {
      detailPane.replaceChildren(h("p", { class: "tscope-hint" }, "The 1D slices through a point appear here."));
      return;
    }
    const { A, B, alphas, betas, values } = grid;
    const selected = model.get("selected_point");
    const { i, j } = focusPoint(alphas, betas, selected);
    const { alongAlpha, alongBeta } = slicesThrough(values, A, B, i, j);
    const log = useLog();
    const quad = quantity() === "loss" ? decodeTree(model.get("_quadratic")) : null;
    const eig = quad?.eigenvalues ?? [];
    const overlay = (curve, k, symbol) =>
      curve ? [{ xs: k === 0 ? alphas : betas, ys: curve.data, color: MODEL_COLOR, label: `L₀ + ½λ${k + 1}${symbol}², λ${k + 1} = ${formatValue(eig[k])}` }] : [];
    const alphaThroughOrigin = isOrigin(betas, j);
    const betaThroughOrigin = isOrigin(alphas, i);
    const children = [];
    const heading = `α = ${formatValue(alphas[i])}, β = ${formatValue(betas[j])}`;
    if (selected) {
      const clear = h("button", { type: "button", title: "back to the slices through the origin", "aria-label": "clear selection" }, "×");
      clear.addEventListener("click", () => {
        model.set("selected_point", null);
        model.save_changes();
      });
      children.push(h("h4", {}, h("span", {}, heading), clear));
    } else {
      children.push(h("h4", {}, h("span", {}, `${heading} (nearest the origin)`)));
    }
    const k = i * B + j;
    const acc = grid.accuracy ? grid.accuracy[k] : NaN;
    children.push(
      h("p", { class: "tscope-caption" }, `loss ${formatValue(grid.loss[k])}${grid.accuracy ? ` · accuracy ${formatValue(acc)}` : ""}`),
      h("p", { class: "tscope-caption" }, `along α (${directionLabels()[0] || "direction 1"}) at β = ${formatValue(betas[j])}`),
      lineChart(Array.from(alphas), alongAlpha, {
        xLabel: "α",
        yLabel: quantity(),
        markerX: alphas[i],
        log,
        theme,
        overlays: alphaThroughOrigin ? overlay(quad?.alpha, 0, "α") : [],
      }),
      h("p", { class: "tscope-caption" }, `along β (${directionLabels()[1] || "direction 2"}) at α = ${formatValue(alphas[i])}`),
      lineChart(Array.from(betas), alongBeta, {
        xLabel: "β",
        yLabel: quantity(),
        markerX: betas[j],
        log,
        theme,
        overlays: betaThroughOrigin ? overlay(quad?.beta, 1, "β") : [],
      }),
    );
    children.push(h("p", { class: "tscope-caption" }, `y axes: ${quantityTitle()}; dotted: the point's own coordinate.`));
    if (quad && (quad.alpha || quad.beta)) {
      children.push(
        h(
          "p",
          { class: "tscope-caption" },
          "Dashed: the quadratic model L₀ + ½λα² of the loss along each Hessian eigenvector (L₀: loss at the origin), drawn on the slices through the origin.",
        ),
      );
    }
    detailPane.replaceChildren(...children);
    detailPane.dataset.point = `${i},${j}`;
    detailPane.dataset.overlays = String(detailPane.querySelectorAll(".tscope-overlay").length);
  }

  // ----- pointer: hover tooltip and click-to-select
  function pointerPosition(event) {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * layout.totalWidth) / box.width,
      y: ((event.clientY - box.top) * layout.totalHeight) / box.height,
    };
  }
  on(canvas, "mousemove", (event) => {
    if (!grid || !layout) return;
    const p = pointerPosition(event);
    const c = gridPointAt(layout, p.x, p.y);
    if (!c) {
      tooltip.style.display = "none";
      return;
    }
    const k = c.i * grid.B + c.j;
    const lines = [
      `α = ${formatValue(grid.alphas[c.i])}, β = ${formatValue(grid.betas[c.j])}`,
      Number.isNaN(grid.loss[k]) ? "not computed yet" : `loss: ${formatValue(grid.loss[k])}`,
    ];
    if (grid.accuracy && !Number.isNaN(grid.accuracy[k])) lines.push(`accuracy: ${formatValue(grid.accuracy[k])}`);
    const near = pointNear(trackPixels, p.x, p.y, 6);
    if (near) lines.push(`${trajectory.label} step ${near.step}: α = ${formatValue(near.alpha)}, β = ${formatValue(near.beta)}`);
    showTooltip(tooltip, plot, lines, event);
  });
  on(canvas, "mouseleave", () => {
    tooltip.style.display = "none";
  });
  on(canvas, "click", (event) => {
    if (!grid || !layout) return;
    const p = pointerPosition(event);
    const c = gridPointAt(layout, p.x, p.y);
    if (!c) return;
    const point = [grid.alphas[c.i], grid.betas[c.j]];
    const current = model.get("selected_point");
    const same = current && focusPoint(grid.alphas, grid.betas, current).i === c.i && focusPoint(grid.alphas, grid.betas, current).j === c.j;
    model.set("selected_point", same ? null : point);
    model.save_changes();
  });

  // ----- controls
  on(quantitySelect, "change", () => {
    const value = (model.get("quantity_options") ?? [])[Number(quantitySelect.value)];
    if (value === undefined) return;
    model.set("quantity", value);
    model.save_changes();
  });
  on(viewSelect, "change", () => {
    model.set("view", ["2d", "3d"][Number(viewSelect.value)] ?? "2d");
    model.save_changes();
  });
  on(scaleSelect, "change", () => {
    const key = Object.keys(SCALE_TITLES)[Number(scaleSelect.value)];
    if (key === undefined) return;
    model.set("log_scale", key === "auto" ? "auto" : key === "log");
    model.save_changes();
  });
  on(contourBox, "change", () => {
    model.set("show_contours", contourBox.checked);
    model.save_changes();
  });
  job.wire(model, life, () => schedule("status"));
  downloads.wire(on);

  // ----- model events
  for (const name of ["_alphas", "_betas", "_loss", "_accuracy", "_trajectory", "quantity"]) {
    listen(`change:${name}`, () => {
      readArrays();
      schedule("main", "detail");
    });
  }
  listen("change:rows_done", () => schedule("main"));
  listen("change:_quadratic", () => schedule("detail"));
  listen("change:selected_point", () => schedule("main", "detail"));
  listen("change:log_scale", () => schedule("controls", "main", "detail"));
  listen("change:show_contours", () => schedule("controls", "main"));
  listen("change:view", () => schedule("controls", "main"));
  listen("change:_surface_esm", () => schedule("main"));
  listen("change:_surface_error", () => schedule("main"));
  for (const name of ["quantity", "quantity_options"]) listen(`change:${name}`, () => schedule("controls"));
  for (const name of ["direction_labels", "quantity_titles"]) listen(`change:${name}`, () => schedule("main", "detail"));


  readArrays();
  theme = themeColors(root);
  drawControls();
  drawStatus();
  drawMain();
  drawDetail();

  life.onDispose(closeSurface);
  if (typeof ResizeObserver !== "undefined") {
    const resized = new ResizeObserver(() => updateSurface()); // a narrower output area refits the 3D view
    resized.observe(root);
    life.onDispose(() => resized.disconnect());
  }
  life.repaintWhenNeeded(root, () => schedule("main", "detail"));
  return life.dispose;
}

export default { render };
