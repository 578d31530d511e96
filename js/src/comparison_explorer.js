// Front end of tscope_widgets.widgets.ComparisonExplorer (anywidget ESM module).
//
// Python owns the numbers: `values` (the difference, log ratio or effect size of the selected layer, [S, S]
// float32, NaN where not tested), `significant` ([S, S] uint8: q < alpha), `q`, `mean_a`, `mean_b`, the counts
// and `detail` (both runs' reservoir values of the selected cell and its test). This view draws them: the
// diverging map with non-significant cells faded (when `mask` is on), both mean maps beside it on one colour
// scale, and the clicked cell's two distributions. It writes back only view state: layer, shown, mask, alpha,
// correction, selected_cell.
//
// Markers for browser tests: root `.tscope-comparison[data-status][data-paints]`, the difference canvas
// `canvas.tscope-difference[data-rows][data-faded][data-alpha]`, the detail pane `.tscope-detail[data-cell]`.
import { baseCss } from "./lib/style.js";
import { viewLifecycle } from "./lib/view.js";
import { drawAxes, positionLabel } from "./lib/axes.js";
import { decode, decodeTree } from "./lib/codec.js";
import { drawColorbar } from "./lib/colorbar.js";
import { fillSelect, h, sizeCanvas } from "./lib/dom.js";
import { cellAt, cellRect, fillRGBA, heatmapLayout, paintGrid } from "./lib/heatmap.js";
import { pictureHidingCSS } from "./lib/picture.js";
import { colorIndexer, colormapLUT, formatValue, resolveLog } from "./lib/scales.js";
import { cssToRGBA, themeColors } from "./lib/theme.js";
import { showTooltip } from "./lib/tooltip.js";
import {
  CORRECTIONS,
  CORRECTION_TITLES,
  SHOWN_TITLES,
  cellTestLines,
  fadeRGBA,
  jointDomain,
  shownTitle,
  significanceText,
  symmetricDomain,
} from "./lib/comparison.js";
import { twoHistogramChart } from "./lib/two_histograms.js";

const DIVERGING_LUT = colormapLUT("rdbu", 256);
const SEQUENTIAL_LUT = colormapLUT("viridis", 256);
const MARGIN = { left: 100, top: 8, right: 90, bottom: 96 };
const DIFFERENCE_SIZE = 300; // CSS pixels of the difference map's cells at most; the two mean maps beside it are smaller
const MEAN_SIZE = 200;
const QUANTITY = "‖J_ij‖²_F";

const CSS = `${baseCss(".tscope-comparison")}
.tscope-comparison .tscope-main { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.tscope-comparison .tscope-plot { position: relative; flex: 0 0 auto; max-width: 100%; } /* the detail pane wraps first */
.tscope-comparison .tscope-maps { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.tscope-comparison canvas { display: block; cursor: crosshair; }
.tscope-comparison .tscope-map-title { font-size: 11px; margin: 0 0 2px; color: var(--jp-ui-font-color1, #1f1f1f); }
.tscope-comparison .tscope-tooltip { position: absolute; display: none; pointer-events: none; z-index: 10;
  white-space: pre; font-size: 11px; padding: 3px 6px; border-radius: 3px;
  background: var(--jp-layout-color0, #fff); border: 1px solid var(--jp-border-color1, #9e9e9e);
  box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.tscope-comparison .tscope-detail { width: 310px; }
.tscope-comparison .tscope-detail h4 { margin: 0; font-size: inherit; display: flex; justify-content: space-between; }
.tscope-comparison .tscope-caption { color: var(--jp-ui-font-color2, #616161); font-size: 11px; margin: 6px 0 0; }
.tscope-comparison .tscope-hint { color: var(--jp-ui-font-color2, #616161); }
.tscope-comparison svg.tscope-chart { display: block; overflow: visible; }
`;

const layerTitle = (layer) => (layer === "final" ? "final norm" : `layer ${layer}`);

function render({ model, el }) {
  const life = viewLifecycle(model);
  const { on, listen } = life;

  // ----- DOM
  const layerSelect = h("select", { "aria-label": "layer" });
  const shownSelect = h("select", { "aria-label": "shown" });
  const maskBox = h("input", { type: "checkbox", "aria-label": "fade non-significant cells" });
  const alphaSelect = h("select", { "aria-label": "alpha" });
  const correctionSelect = h("select", { "aria-label": "correction" });
  const toolbar = h(
    "div",
    { class: "tscope-toolbar" },
    h("label", {}, "layer", layerSelect),
    h("label", {}, "show", shownSelect),
    h("label", { title: "fade the cells whose difference is not significant" }, maskBox, "fade n.s."),
    h("label", {}, "α", alphaSelect),
    h("label", {}, "correction", correctionSelect),
  );
  const statusLine = h("p", { class: "tscope-caption tscope-status" });
  const summaryLine = h("p", { class: "tscope-caption tscope-summary" });
  const canvases = [0, 1, 2].map((k) => h("canvas", { class: ["tscope-difference", "tscope-mean-a", "tscope-mean-b"][k] }));
  const titles = [0, 1, 2].map(() => h("p", { class: "tscope-map-title" }));
  const tooltip = h("div", { class: "tscope-tooltip" });
  const plot = h(
    "div",
    { class: "tscope-plot" },
    h("div", { class: "tscope-maps" }, ...canvases.map((c, k) => h("div", {}, titles[k], c))),
    tooltip,
  );
  const detailPane = h("div", { class: "tscope-detail" });
  const root = h(
    "div",
    { class: "tscope-comparison tscope-root" },
    h("style", {}, CSS + pictureHidingCSS(model.get("picture_id"))),
    toolbar,
    statusLine,
    summaryLine,
    h("div", { class: "tscope-main" }, plot, detailPane),
  );
  el.append(root);

  // ----- view state (this render only)
  const scratch = document.createElement("canvas");
  const probe = document.createElement("canvas");
  probe.width = probe.height = 1;
  let theme = themeColors(root);
  let arrays = null; // decoded {values, significant, q, meanA, meanB, countsA, countsB}
  const layouts = new Map(); // canvas -> its heatmap layout (for hit-testing), while it shows a map
  let paints = 0;
  const names = () => model.get("names") ?? ["a", "b"];
  const tokens = () => model.get("token_labels") ?? [];

  const dirty = new Set();
  const parts = { controls: drawControls, status: drawStatus, main: drawMain, detail: drawDetail };
  function schedule(...list) {
    if (dirty.size === 0) {
      queueMicrotask(() => {
        if (life.closed) return;
        const todo = [...dirty];
        dirty.clear();
        theme = themeColors(root);
        for (const name of Object.keys(parts)) if (todo.includes(name)) parts[name]();
      });
    }
    for (const n of list) dirty.add(n);
  }

  function readArrays() {
    const values = decode(model.get("values"));
    arrays = values
      ? {
          values,
          significant: decode(model.get("significant")),
          q: decode(model.get("q")),
          meanA: decode(model.get("mean_a")),
          meanB: decode(model.get("mean_b")),
          countsA: decode(model.get("counts_a")),
          countsB: decode(model.get("counts_b")),
        }
      : null;
  }

  function alphaOptions() {
    const options = [...(model.get("alpha_options") ?? [])];
    const alpha = model.get("alpha");
    if (!options.includes(alpha)) options.push(alpha);
    return options.sort((x, y) => x - y);
  }

  function drawControls() {
    fillSelect(layerSelect, model.get("layer_options") ?? [], model.get("layer"), layerTitle);
    fillSelect(shownSelect, model.get("shown_options") ?? [], model.get("shown"), (k) => SHOWN_TITLES[k] ?? k);
    fillSelect(alphaSelect, alphaOptions(), model.get("alpha"), (a) => String(a));
    fillSelect(correctionSelect, CORRECTIONS, model.get("correction"), (c) => CORRECTION_TITLES[c]);
    maskBox.checked = Boolean(model.get("mask"));
  }

  function drawStatus() {
    const [a, b] = names();
    const status = model.get("status");
    root.dataset.status = status;
    let text = `${a}: ${model.get("status_a") || "–"} (${model.get("done_a")} samples) · ${b}: ${model.get("status_b") || "–"} (${model.get("done_b")} samples)`;
    if (model.get("message")) text += ` · ${model.get("message")}`;
    statusLine.textContent = text;
    statusLine.style.color = status === "error" ? theme.error : "";
    summaryLine.textContent = arrays
      ? `Welch t-test per cell: ${significanceText(model.get("num_significant"), model.get("num_tests"), model.get("alpha"), model.get("correction"))}`
      : "";
  }

  function paintMap(canvas, values, rows, cols, { domain, log, lut, title, significant, maxSize }) {
    const lay = heatmapLayout({ rows, cols, maxSize, margin: MARGIN });
    const ctx = sizeCanvas(canvas, lay.totalWidth, lay.totalHeight, theme.bg);
    const rgba = fillRGBA(new Uint8ClampedArray(4 * rows * cols), values, colorIndexer(domain, { log }), lut, {
      nan: cssToRGBA(theme.nan, probe),
      nonpositive: cssToRGBA(theme.bg, probe),
    });
    const faded = significant ? fadeRGBA(rgba, values, significant, cssToRGBA(theme.bg, probe)) : 0;
    paintGrid(ctx, lay, rgba, scratch);
    const selected = model.get("selected_cell");
    if (selected && selected[0] < rows && selected[1] < cols) {
      const r = cellRect(lay, selected[0], selected[1]);
      ctx.strokeStyle = theme.accent;
      ctx.lineWidth = 2;
      ctx.strokeRect(r.x - 1, r.y - 1, r.w + 2, r.h + 2);
    }
    drawAxes(ctx, lay, { tokens: tokens(), theme, xTitle: "input position j", yTitle: "output position i" });
    drawColorbar(ctx, { x: lay.x + lay.width + 12, y: lay.y, width: 12, height: lay.height, lut, domain, log, title: title + (log ? " (log)" : ""), theme });
    canvas.dataset.rows = String(rows);
    canvas.dataset.domain = domain.map(formatValue).join(",");
    canvas.dataset.faded = String(faded);
    layouts.set(canvas, lay);
  }

  function drawMain() {
    const [a, b] = names();
    if (!arrays) {
      layouts.clear();
      const text = model.get("status") === "error" ? model.get("message") : "waiting for the first batch of both runs…";
      const ctx = sizeCanvas(canvases[0], 420, 60, theme.bg);
      ctx.fillStyle = model.get("status") === "error" ? theme.error : theme.fg2;
      ctx.font = `12px ${theme.font}`;
      ctx.fillText(text, 12, 30);
      canvases[0].dataset.empty = text;
      canvases[1].style.display = canvases[2].style.display = "none";
      return;
    }
    delete canvases[0].dataset.empty;
    canvases[1].style.display = canvases[2].style.display = "";
    const { values, significant, meanA, meanB } = arrays;
    const [rows, cols] = values.shape;
    const title = shownTitle(model.get("shown"), [a, b]);
    paintMap(canvases[0], values.data, rows, cols, {
      maxSize: DIFFERENCE_SIZE,
      domain: symmetricDomain(values.data),
      log: false,
      lut: DIVERGING_LUT,
      title,
      significant: model.get("mask") ? significant.data : null,
    });
    canvases[0].dataset.alpha = String(model.get("alpha"));
    canvases[0].dataset.mask = String(Boolean(model.get("mask")));
    titles[0].textContent = `${layerTitle(model.get("layer"))} · ${title}${model.get("mask") ? " · faded: not significant" : ""}`;
    const both = new Float64Array(meanA.data.length + meanB.data.length);
    both.set(meanA.data);
    both.set(meanB.data, meanA.data.length);
    const log = resolveLog("auto", both);
    const domain = jointDomain(meanA.data, meanB.data, log);
    [meanA, meanB].forEach((m, k) => {
      paintMap(canvases[k + 1], m.data, rows, cols, { domain, log, lut: SEQUENTIAL_LUT, title: `mean ${QUANTITY}`, significant: null, maxSize: MEAN_SIZE });
      titles[k + 1].textContent = `mean ${QUANTITY} of ${names()[k]}`;
    });
    paints += 1;
    root.dataset.paints = String(paints);
  }

  function drawDetail() {
    const cell = model.get("selected_cell");
    if (!arrays || !cell) {
      detailPane.replaceChildren(h("p", { class: "tscope-hint" }, "Click a cell: both runs' values of it, and its test."));
      delete detailPane.dataset.cell;
      return;
    }
    const [i, j] = cell;
    const raw = decodeTree(model.get("detail"));
    const info = raw && raw.cell && raw.cell[0] === i && raw.cell[1] === j && raw.layer === model.get("layer") ? raw : null;
    const clear = h("button", { type: "button", title: "clear the selection", "aria-label": "clear selection" }, "×");
    clear.addEventListener("click", () => {
      model.set("selected_cell", null);
      model.save_changes();
    });
    const children = [
      h("h4", {}, h("span", {}, `output ${positionLabel(i, tokens(), 16)} ← input ${positionLabel(j, tokens(), 16)}`), clear),
      h("p", { class: "tscope-caption" }, layerTitle(model.get("layer"))),
    ];
    if (info) {
      const sa = info.samples_a ? info.samples_a.data : [];
      const sb = info.samples_b ? info.samples_b.data : [];
      for (const line of cellTestLines(info, names())) children.push(h("p", { class: "tscope-caption" }, line));
      children.push(
        twoHistogramChart(sa, sb, { names: names(), means: [info.mean_a, info.mean_b], xLabel: QUANTITY, theme }),
        h("p", { class: "tscope-caption" }, "the cell's values in each run's reservoir; dashed: the means over all samples"),
      );
      detailPane.dataset.samples = `${sa.length},${sb.length}`;
    } else {
      children.push(h("p", { class: "tscope-caption" }, "loading…"));
    }
    detailPane.replaceChildren(...children);
    detailPane.dataset.cell = `${i},${j}`;
  }

  // ----- pointer: hover and click on any of the three maps
  function cellOfEvent(canvas, event) {
    const layout = layouts.get(canvas);
    if (!layout) return null;
    const box = canvas.getBoundingClientRect();
    const x = ((event.clientX - box.left) * layout.totalWidth) / box.width;
    const y = ((event.clientY - box.top) * layout.totalHeight) / box.height;
    return cellAt(layout, x, y);
  }
  for (const canvas of canvases) {
    on(canvas, "mousemove", (event) => {
      const c = arrays && cellOfEvent(canvas, event);
      if (!c) {
        tooltip.style.display = "none";
        return;
      }
      const k = c.i * arrays.values.shape[1] + c.j;
      const [a, b] = names();
      showTooltip(tooltip, plot, [
        `output ${positionLabel(c.i, tokens(), 24)}`,
        `input  ${positionLabel(c.j, tokens(), 24)}`,
        `${shownTitle(model.get("shown"), [a, b])}: ${formatValue(arrays.values.data[k])}`,
        `q = ${formatValue(arrays.q.data[k])}${arrays.significant.data[k] ? " (significant)" : ""}`,
        `mean ${a}: ${formatValue(arrays.meanA.data[k])} (n = ${arrays.countsA.data[k]})`,
        `mean ${b}: ${formatValue(arrays.meanB.data[k])} (n = ${arrays.countsB.data[k]})`,
      ], event);
    });
    on(canvas, "mouseleave", () => {
      tooltip.style.display = "none";
    });
    on(canvas, "click", (event) => {
      const c = cellOfEvent(canvas, event);
      if (!c) return;
      const current = model.get("selected_cell");
      const same = current && current[0] === c.i && current[1] === c.j;
      model.set("selected_cell", same ? null : [c.i, c.j]);
      model.save_changes();
    });
  }

  // ----- controls
  const choose = (select, trait, options) => () => {
    const value = options()[Number(select.value)];
    if (value === undefined) return;
    model.set(trait, value);
    model.save_changes();
  };
  on(layerSelect, "change", choose(layerSelect, "layer", () => model.get("layer_options") ?? []));
  on(shownSelect, "change", choose(shownSelect, "shown", () => model.get("shown_options") ?? []));
  on(alphaSelect, "change", choose(alphaSelect, "alpha", alphaOptions));
  on(correctionSelect, "change", choose(correctionSelect, "correction", () => CORRECTIONS));
  on(maskBox, "change", () => {
    model.set("mask", maskBox.checked);
    model.save_changes();
  });

  // ----- model events
  for (const name of ["values", "significant", "q", "mean_a", "mean_b", "counts_a", "counts_b"]) {
    listen(`change:${name}`, () => {
      readArrays();
      schedule("main", "status", "detail");
    });
  }
  listen("change:detail", () => schedule("detail"));
  listen("change:selected_cell", () => schedule("main", "detail"));
  for (const name of ["mask", "alpha", "correction", "shown", "layer", "layer_options", "alpha_options", "shown_options"]) {
    listen(`change:${name}`, () => schedule("controls", "main", "status"));
  }
  for (const name of ["status", "status_a", "status_b", "done_a", "done_b", "message", "num_tests", "num_significant"]) {
    listen(`change:${name}`, () => schedule("status"));
  }
  for (const name of ["token_labels", "names"]) listen(`change:${name}`, () => schedule("main", "detail", "status"));

  readArrays();
  drawControls();
  drawStatus();
  drawMain();
  drawDetail();
  life.repaintWhenNeeded(root, () => schedule("main", "detail"));
  return life.dispose;
}

export default { render };
