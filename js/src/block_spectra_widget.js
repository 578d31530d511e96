// Front end of tscope_widgets.widgets.BlockSpectraWidget (anywidget ESM module).
//
// Python owns the data: `view` (block labels, the common signed-log grid [X], each block's normalised
// density [G, X], the Jensen–Shannon distances [G, G] and their mean JS⁰, each block's λ_max and the
// sharpness by block type with the Sharpness Disparity ratios) and the job's status. This view draws
// them as tscope_widgets/figures/block_spectra.py describes (densities overlaid or side by side, the
// distance heatmap, the type points) and writes back only view state: selected_blocks, overlay, log_y;
// pause/resume/stop go as custom messages. Each render() keeps its own state and returns a cleanup.
import { baseCss } from "./lib/style.js";
import { viewLifecycle } from "./lib/view.js";
import { drawAxes } from "./lib/axes.js";
import { decodeTree } from "./lib/codec.js";
import { drawColorbar } from "./lib/colorbar.js";
import { h, sizeCanvas } from "./lib/dom.js";
import { cellAt, fillRGBA, heatmapLayout, paintGrid } from "./lib/heatmap.js";
import { multiLineChart } from "./lib/multiline.js";
import { pictureHidingCSS } from "./lib/picture.js";
import { colorDomain, colorIndexer, colormapLUT, formatValue } from "./lib/scales.js";
import { blockMapMargins } from "./lib/spectrum_data.js";
import { densityLines, distanceText, sharedDomain, typePoints, typeRows } from "./lib/block_spectra_data.js";
import { jobControls } from "./lib/job_controls.js";
import { cssToRGBA, themeColors } from "./lib/theme.js";
import { columnsCsv, downloadButtons } from "./lib/download.js";
import { showTooltip as placeTooltip } from "./lib/tooltip.js";

const LUT = colormapLUT("viridis", 256);

const CSS = `${baseCss(".tscope-blocks")}
.tscope-blocks { position: relative; }
.tscope-blocks .tscope-toolbar { gap: 6px 14px; }
.tscope-blocks details.tscope-block-menu { position: relative; }
.tscope-blocks details.tscope-block-menu summary { cursor: pointer; }
.tscope-blocks details.tscope-block-menu > div { position: absolute; z-index: 20; min-width: 200px; max-height: 320px;
  overflow: auto; padding: 6px 8px; background: var(--jp-layout-color0, #fff);
  border: 1px solid var(--jp-border-color1, #bdbdbd); box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.tscope-blocks details.tscope-block-menu label { display: flex; }
.tscope-blocks .tscope-row { display: flex; flex-wrap: wrap; gap: 10px 16px; align-items: flex-start; }
.tscope-blocks .tscope-panel h4 { margin: 0 0 2px; font-size: 12px; font-weight: 600; }
.tscope-blocks canvas { display: block; }
.tscope-blocks svg.tscope-chart { display: block; overflow: visible; }
.tscope-blocks .tscope-tooltip { position: absolute; display: none; pointer-events: none; z-index: 30;
  white-space: pre; font-size: 11px; padding: 3px 6px; border-radius: 3px;
  background: var(--jp-layout-color0, #fff); border: 1px solid var(--jp-border-color1, #9e9e9e);
  box-shadow: 0 1px 3px rgba(0, 0, 0, 0.25); }
.tscope-blocks .tscope-hint, .tscope-blocks .tscope-caption { color: var(--jp-ui-font-color2, #616161); font-size: 11px; margin: 4px 0; }
.tscope-blocks table.tscope-types { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
.tscope-blocks table.tscope-types th, .tscope-blocks table.tscope-types td { padding: 1px 8px; text-align: right;
  border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
`;

function render({ model, el }) {
  const life = viewLifecycle(model);
  const { on, listen } = life;
  const save = (changes) => {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.save_changes();
  };

  // ----- DOM
  const blockList = h("div", {});
  const blockSummary = h("summary", {}, "blocks");
  const blockMenu = h("details", { class: "tscope-block-menu" }, blockSummary, blockList);
  const allButton = h("button", { type: "button", title: "draw every block" }, "all");
  const overlayBox = h("input", { type: "checkbox", "aria-label": "overlay" });
  const logBox = h("input", { type: "checkbox", "aria-label": "log scale" });
  const controls = jobControls({ unit: "block", keeps: "the blocks done", counted: "blocks" });
  const downloads = downloadButtons({
    container: () => figure,
    theme: () => theme,
    name: () => ["block-spectra", model.get("overlay") ? "overlay" : "side-by-side"],
    csv: () => densityCsv(),
  });
  const toolbar = h(
    "div",
    { class: "tscope-toolbar" },
    blockMenu,
    allButton,
    h("label", {}, overlayBox, "overlay"),
    h("label", {}, logBox, "log scale"),
    controls.buttons,
    downloads.element,
  );
  const densityPane = h("div", { class: "tscope-row tscope-densities" });
  const jsCanvas = h("canvas", { class: "tscope-js" });
  const jsTitle = h("h4", {}, "Jensen–Shannon distance between block spectra");
  const jsPane = h("div", { class: "tscope-panel tscope-js-pane" }, jsTitle, jsCanvas);
  const typesPane = h("div", { class: "tscope-panel tscope-types-pane" });
  const figure = h("div", { class: "tscope-figure" }, densityPane, h("div", { class: "tscope-row" }, jsPane, typesPane));
  const tooltip = h("div", { class: "tscope-tooltip" });
  const root = h(
    "div",
    { class: "tscope-blocks tscope-root" },
    h("style", {}, CSS + pictureHidingCSS(model.get("picture_id"))),
    toolbar,
    controls.statusLine,
    figure,
    tooltip,
  );
  el.append(root);

  // ----- state of this render
  const scratch = document.createElement("canvas");
  const probe = document.createElement("canvas");
  probe.width = probe.height = 1;
  let theme = themeColors(root);
  let view = null; // decoded `view`
  let jsLayout = null;
  let paints = 0;
  const log = () => Boolean(model.get("log_y"));
  const showTooltip = (lines, event) => placeTooltip(tooltip, root, lines, event);
  const hideTooltip = () => {
    tooltip.style.display = "none";
  };

  const dirty = new Set();
  const parts = { controls: drawControls, status: () => controls.draw(model, root), densities: drawDensities, js: drawDistances, types: drawTypes };
  function schedule(...names) {
    if (dirty.size === 0) {
      queueMicrotask(() => {
        if (life.closed) return;
        const todo = [...dirty];
        dirty.clear();
        theme = themeColors(root);
        for (const name of Object.keys(parts)) if (todo.includes(name)) parts[name]();
        paints += 1;
        root.dataset.paints = String(paints); // browser tests: bumps after every repaint
      });
    }
    for (const n of names) dirty.add(n);
  }
  const ALL = Object.keys(parts);

  function drawControls() {
    const labels = model.get("block_labels") ?? [];
    const selected = new Set(model.get("selected_blocks") ?? []);
    const key = JSON.stringify(labels);
    if (blockList.dataset.options !== key) {
      blockList.replaceChildren(...labels.map((g, k) => h("label", {}, h("input", { type: "checkbox", "data-index": String(k) }), g)));
      blockList.dataset.options = key;
    }
    for (const box of blockList.querySelectorAll("input[data-index]")) box.checked = selected.has(labels[Number(box.dataset.index)]);
    blockSummary.textContent = `blocks (${selected.size} of ${labels.length})`;
    overlayBox.checked = Boolean(model.get("overlay"));
    logBox.checked = log();
  }

  function densityCsv() {
    if (!view) return null;
    const lines = densityLines(view.labels, view.densities.data, view.labels, false);
    return columnsCsv([["u (signed log10 of |λ|/λ₁₀ over the floor)", Array.from(view.grid.data)], ...lines.map((l) => [l.label, Array.from(l.ys)])]);
  }

  function drawDensities() {
    if (!view) {
      densityPane.replaceChildren(h("p", { class: "tscope-hint" }, "waiting for the first block…"));
      root.dataset.blocks = "0";
      return;
    }
    root.dataset.blocks = String(view.labels.length);
    const xs = Array.from(view.grid.data);
    const lines = densityLines(view.labels, view.densities.data, model.get("selected_blocks"), log());
    if (lines.length === 0) {
      densityPane.replaceChildren(h("p", { class: "tscope-hint" }, "no block selected (see the blocks menu)"));
      densityPane.dataset.lines = "0";
      return;
    }
    const floor = formatValue(view.floor);
    const xLabel = `sign(λ)·log10(max(|λ|/λ₁₀, ${floor}) / ${floor})`;
    const hover = (ls) => (k, event) => (k === null ? hideTooltip() : showTooltip([`u = ${formatValue(xs[k])}`, ...ls.map((l) => `${l.label}: ${formatValue(l.ys[k])}`)], event));
    let charts;
    if (model.get("overlay")) {
      const svg = multiLineChart({ xs, series: lines, width: 520, height: 220, xLabel, yLabel: "density", log: log(), theme, onHover: hover(lines) });
      charts = [h("div", { class: "tscope-panel", "data-block": "all" }, h("h4", {}, "block Hessian spectra, normalised by each block's 10th eigenvalue (SLQ)"), svg)];
    } else {
      const yDomain = sharedDomain(lines, log());
      charts = lines.map((l) => {
        const svg = multiLineChart({ xs, series: [l], width: 260, height: 150, xLabel, yLabel: "density", log: log(), theme, yDomain, onHover: hover([l]) });
        return h("div", { class: "tscope-panel", "data-block": l.label }, h("h4", {}, `${l.label}: normalised spectrum`), svg);
      });
    }
    densityPane.replaceChildren(...charts);
    densityPane.dataset.lines = String(lines.length);
    densityPane.dataset.charts = String(charts.length);
  }

  function drawDistances() {
    if (!view) {
      jsLayout = null;
      jsPane.style.display = "none";
      return;
    }
    jsPane.style.display = "";
    const labels = view.labels;
    const G = labels.length;
    const margins = blockMapMargins(labels, { grouping: false });
    jsLayout = heatmapLayout({ rows: G, cols: G, maxSize: 320, maxCell: 28, margin: { ...margins, bottom: margins.bottom } });
    const L = jsLayout;
    const ctx = sizeCanvas(jsCanvas, L.totalWidth, Math.max(L.totalHeight, L.y + 80 + margins.bottom), theme.bg);
    const values = view.distances.data;
    const domain = colorDomain(values, false);
    const rgba = fillRGBA(new Uint8ClampedArray(4 * values.length), values, colorIndexer(domain, { log: false }), LUT, {
      nan: cssToRGBA(theme.nan, probe),
      nonpositive: cssToRGBA(theme.bg, probe),
    });
    paintGrid(ctx, L, rgba, scratch);
    drawAxes(ctx, L, { theme, xTitle: "block b", yTitle: "block a", rowLabel: (i) => labels[i], colLabel: (j) => labels[j] });
    drawColorbar(ctx, { x: L.x + L.width + 12, y: L.y, width: 12, height: Math.max(L.height, 80), lut: LUT, domain, log: false, title: "JS(a, b)", theme });
    const mean = view.js_mean;
    jsTitle.textContent = `Jensen–Shannon distance between block spectra (mean JS⁰ = ${mean === null || mean === undefined ? "–" : formatValue(mean)})`;
    jsCanvas.dataset.rows = String(G);
    jsCanvas.dataset.plot = `${L.x},${L.y},${L.width},${L.height}`;
    jsPane.dataset.mean = mean === null || mean === undefined ? "" : String(mean);
  }

  function drawTypes() {
    const t = view ? view.types : null;
    if (!t) {
      typesPane.replaceChildren(h("h4", {}, "sharpness by block type"), h("p", { class: "tscope-hint" }, view ? view.types_note || "no typed blocks" : "waiting for the first block…"));
      typesPane.dataset.types = "0";
      return;
    }
    const pts = typePoints(t);
    const svg = multiLineChart({
      xs: pts.xs,
      series: pts.series,
      width: 340,
      height: 190,
      xLabel: `block type (Sharpness Disparity order: ${pts.names.join(" < ")})`,
      yLabel: "mean λ_max(H_aa)",
      log: log(),
      theme,
      xTickLabel: (v) => pts.names[v] ?? "",
    });
    const { rows, follows } = typeRows(t);
    const table = h(
      "table",
      { class: "tscope-types" },
      h("tr", {}, h("th", {}, "type"), h("th", {}, "blocks"), h("th", {}, "S(t)"), h("th", {}, "ratio to previous")),
      ...rows.map((r) => h("tr", { "data-type": r.type }, h("td", {}, r.name), h("td", {}, String(r.count)), h("td", {}, formatValue(r.value)), h("td", {}, r.ratio === null ? "" : `×${formatValue(r.ratio)}`))),
    );
    const verdict = `Sharpness Disparity order S(Emb) < S(QK) < S(FFN) < S(VO) < S(Norm): ${follows ? "holds" : "does not hold"}`;
    typesPane.replaceChildren(h("h4", {}, "sharpness by block type: mean λ_max(H_aa) of its blocks"), svg, h("p", { class: "tscope-caption" }, verdict), table);
    typesPane.dataset.types = String(rows.length);
    typesPane.dataset.follows = String(follows);
  }

  on(jsCanvas, "mousemove", (event) => {
    if (!view || !jsLayout) return hideTooltip();
    const box = jsCanvas.getBoundingClientRect();
    const width = parseFloat(jsCanvas.style.width) || box.width;
    const height = parseFloat(jsCanvas.style.height) || box.height;
    const c = cellAt(jsLayout, ((event.clientX - box.left) * width) / box.width, ((event.clientY - box.top) * height) / box.height);
    if (!c) return hideTooltip();
    showTooltip(distanceText(view.labels, view.distances.data, c.i, c.j), event);
  });
  on(jsCanvas, "mouseleave", hideTooltip);

  // ----- controls
  on(blockList, "change", () => {
    const labels = model.get("block_labels") ?? [];
    const chosen = [...blockList.querySelectorAll("input[data-index]")].filter((b) => b.checked).map((b) => labels[Number(b.dataset.index)]);
    save({ selected_blocks: chosen.filter((g) => g !== undefined) });
  });
  on(allButton, "click", () => save({ selected_blocks: [...(model.get("block_labels") ?? [])] }));
  on(overlayBox, "change", () => save({ overlay: overlayBox.checked }));
  on(logBox, "change", () => save({ log_y: logBox.checked }));
  downloads.wire(on);
  controls.wire(model, life, () => schedule("status"));

  // ----- model events
  function readView() {
    view = decodeTree(model.get("view"));
  }
  listen("change:view", () => {
    readView();
    schedule("densities", "js", "types");
  });
  listen("change:block_labels", () => schedule("controls"));
  listen("change:selected_blocks", () => schedule("controls", "densities"));
  listen("change:overlay", () => schedule("controls", "densities"));
  listen("change:log_y", () => schedule("controls", "densities", "types"));

  readView();
  schedule(...ALL);
  life.repaintWhenNeeded(root, () => schedule(...ALL));
  return life.dispose;
}

export default { render };
