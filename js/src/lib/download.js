// Downloads of what a view shows, made in the page (no kernel round trip): a PNG and an SVG document
// of the view's charts (its canvases and SVG charts, placed as on screen, on the view's background) and
// a CSV file of the numbers drawn. The CSV builders are pure (unit tested in js/test/download.test.js).
import { h } from "./dom.js";

const SVG_NS = "http://www.w3.org/2000/svg";

/** One CSV field (RFC 4180): numbers in full precision, non-finite numbers empty, text quoted when it
 * holds a comma, a quote or a line break. */
export function csvField(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : "";
  const text = String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** CSV text of a header and rows (arrays of fields), lines ended by CRLF as RFC 4180 asks. */
export function csvText(header, rows) {
  const lines = [header, ...rows].map((row) => Array.from(row, csvField).join(","));
  return lines.join("\r\n") + "\r\n";
}

/**
 * CSV of a row-major `rows x cols` matrix: a header of column names (after `corner`), then one line per
 * row that starts with its name. `rowName(i)` / `colName(j)` default to the index.
 */
export function matrixCsv(values, rows, cols, { rowName = String, colName = String, corner = "" } = {}) {
  if (values.length !== rows * cols) throw new Error(`matrixCsv: ${values.length} values for a ${rows} x ${cols} matrix`);
  const header = [corner, ...Array.from({ length: cols }, (_, j) => colName(j))];
  const body = Array.from({ length: rows }, (_, i) => [rowName(i), ...Array.from(values.subarray ? values.subarray(i * cols, (i + 1) * cols) : values.slice(i * cols, (i + 1) * cols))]);
  return csvText(header, body);
}

/** CSV of named columns of equal length: `[[name, values], ...]`. */
export function columnsCsv(columns) {
  const n = columns.length ? columns[0][1].length : 0;
  for (const [name, values] of columns) {
    if (values.length !== n) throw new Error(`columnsCsv: column ${name} has ${values.length} values, the first ${n}`);
  }
  const body = Array.from({ length: n }, (_, k) => columns.map(([, values]) => values[k]));
  return csvText(columns.map(([name]) => name), body);
}

/** A file name from parts: lower case, runs of anything but letters, digits, dots and dashes -> "-". */
export function fileName(parts, extension) {
  const stem = parts
    .filter((p) => p !== null && p !== undefined && p !== "")
    .map((p) => String(p).toLowerCase().replace(/[^a-z0-9.-]+/g, "-").replace(/^-+|-+$/g, ""))
    .filter(Boolean)
    .join("-");
  return `${stem || "tscope"}.${extension}`;
}

// ----------------------------------------------------------------- the page (needs a DOM)

/** The charts shown in `container`: visible canvases and top-level SVG charts, with their boxes relative
 * to the container (CSS pixels). */
function chartsIn(container) {
  const box = container.getBoundingClientRect();
  const out = [];
  for (const el of container.querySelectorAll("canvas, svg")) {
    if (el.tagName.toLowerCase() === "svg" && el.parentElement && el.parentElement.closest("svg")) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || getComputedStyle(el).visibility === "hidden") continue;
    out.push({ el, x: r.left - box.left, y: r.top - box.top, w: r.width, h: r.height });
  }
  return out;
}

function extentOf(charts) {
  let w = 1;
  let hgt = 1;
  for (const c of charts) {
    w = Math.max(w, c.x + c.w);
    hgt = Math.max(hgt, c.y + c.h);
  }
  return [Math.ceil(w), Math.ceil(hgt)];
}

/** The SVG charts' markup with a namespace and size (the chart as a standalone document). */
function svgMarkup(svg, x, y, w, hgt) {
  const clone = svg.cloneNode(true);
  clone.setAttribute("xmlns", SVG_NS);
  clone.setAttribute("x", String(x));
  clone.setAttribute("y", String(y));
  clone.setAttribute("width", String(w));
  clone.setAttribute("height", String(hgt));
  clone.setAttribute("overflow", "visible");
  return new XMLSerializer().serializeToString(clone);
}

/**
 * An SVG document of the charts in `container` as laid out on screen: SVG charts as vector graphics,
 * canvases (heatmaps drawn with their axes) as embedded PNG images at device resolution.
 * @param {Element} container
 * @param {{background: string, font: string}} theme  the view's background and font
 */
export function viewSvg(container, theme) {
  const charts = chartsIn(container);
  const [w, hgt] = extentOf(charts);
  const parts = charts.map((c) =>
    c.el.tagName.toLowerCase() === "canvas"
      ? `<image x="${c.x}" y="${c.y}" width="${c.w}" height="${c.h}" xlink:href="${c.el.toDataURL("image/png")}"/>`
      : svgMarkup(c.el, c.x, c.y, c.w, c.h),
  );
  const font = String(theme.font).replace(/"/g, "'");
  return (
    `<svg xmlns="${SVG_NS}" xmlns:xlink="http://www.w3.org/1999/xlink" width="${w}" height="${hgt}" viewBox="0 0 ${w} ${hgt}" font-family="${font}" font-size="10">` +
    `<rect width="${w}" height="${hgt}" fill="${theme.bg}"/>${parts.join("")}</svg>`
  );
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("an SVG chart could not be drawn as an image"));
    img.src = url;
  });
}

/** A PNG (Blob) of the charts in `container` at `scale` times their CSS size, on the view's background. */
export async function viewPng(container, theme, scale = 2) {
  const charts = chartsIn(container);
  const [w, hgt] = extentOf(charts);
  const out = document.createElement("canvas");
  out.width = Math.round(w * scale);
  out.height = Math.round(hgt * scale);
  const ctx = out.getContext("2d");
  ctx.scale(scale, scale);
  ctx.fillStyle = theme.bg;
  ctx.fillRect(0, 0, w, hgt);
  for (const c of charts) {
    if (c.el.tagName.toLowerCase() === "canvas") {
      ctx.drawImage(c.el, c.x, c.y, c.w, c.h);
    } else {
      const markup = svgMarkup(c.el, 0, 0, c.w, c.h).replace("<svg", `<svg font-family="${String(theme.font).replace(/"/g, "'")}" font-size="10"`);
      const img = await loadImage(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(markup)}`);
      ctx.drawImage(img, c.x, c.y, c.w, c.h);
    }
  }
  return new Promise((resolve, reject) => out.toBlob((b) => (b ? resolve(b) : reject(new Error("the PNG could not be encoded"))), "image/png"));
}

/** Save `blob` as `name` through the browser's download (an `<a download>` clicked once). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name, style: "display:none" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/**
 * Buttons "PNG", "SVG", "CSV" (in one span, for a toolbar) that download the current view.
 * @param {object} what
 * @param {() => Element} what.container  the element whose charts are the view
 * @param {() => {bg: string, font: string}} what.theme  the view's theme colours
 * @param {() => string[]} what.name  parts of the file names (widget, layer, statistic…)
 * @param {() => string | null} what.csv  the numbers as CSV text (null when there are none yet)
 * @param {(err: Error) => void} [what.onError]
 */
export function downloadButtons({ container, theme, name, csv, onError = (err) => console.error(err) }) {
  const button = (format, title) => h("button", { type: "button", class: `tscope-download-${format}`, title }, format.toUpperCase());
  const buttons = {
    png: button("png", "download the view as a PNG image"),
    svg: button("svg", "download the view as an SVG document"),
    csv: button("csv", "download the numbers of the view as CSV"),
  };
  const run = (format) => async () => {
    try {
      const t = theme();
      const colors = { bg: t.bg, font: t.font };
      if (format === "csv") {
        const text = csv();
        if (text === null) throw new Error("nothing to download yet");
        saveBlob(new Blob([text], { type: "text/csv" }), fileName(name(), "csv"));
      } else if (format === "svg") {
        saveBlob(new Blob([viewSvg(container(), colors)], { type: "image/svg+xml" }), fileName(name(), "svg"));
      } else {
        saveBlob(await viewPng(container(), colors), fileName(name(), "png"));
      }
    } catch (err) {
      onError(err);
    }
  };
  return {
    element: h("span", { class: "tscope-downloads", title: "download" }, "save ", buttons.png, " ", buttons.svg, " ", buttons.csv),
    /** Wire the buttons through the view's `on` (listeners removed with the view). */
    wire(on) {
      for (const format of Object.keys(buttons)) on(buttons[format], "click", run(format));
    },
  };
}
