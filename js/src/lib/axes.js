// Token labels for heatmap axes, thinned so that long sequences stay readable.

/** Step between labelled positions so that at most `maxTicks` of `n` positions get a label. */
export function tickStep(n, maxTicks) {
  return Math.max(1, Math.ceil(n / Math.max(1, Math.floor(maxTicks))));
}

/** Labelled positions: 0, step, 2 step, ... below `n`. */
export function thinTicks(n, maxTicks) {
  const step = tickStep(n, maxTicks);
  const out = [];
  for (let k = 0; k < n; k += step) out.push(k);
  return out;
}

/**
 * A "nice" step between labelled positions (1, 2, 5, 10, 20, 50, ...) so that at most `maxTicks` of
 * `n` positions get a label: labels then fall on round positions (0, 50, 100) at every zoom.
 */
export function niceTickStep(n, maxTicks) {
  const raw = n / Math.max(1, Math.floor(maxTicks));
  if (!(raw > 1)) return 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

/**
 * Labelled positions among the `count` positions from `start` (a zoomed view): the multiples of
 * `niceTickStep(count, maxTicks)` in `[start, start + count)`.
 */
export function viewTicks(start, count, maxTicks) {
  const step = niceTickStep(count, maxTicks);
  const out = [];
  for (let k = Math.ceil(start / step) * step; k < start + count; k += step) out.push(k);
  return out;
}

/** How many labels fit along `lengthPx` pixels with at least `spacingPx` between them. */
export function maxTicksFor(lengthPx, spacingPx = 12) {
  return Math.max(1, Math.floor(lengthPx / spacingPx));
}

const VISIBLE = { " ": "␣", "\n": "⏎", "\r": "␍", "\t": "⇥" };

/** Make whitespace and control characters visible: `" the"` -> `"␣the"`. */
export function displayToken(text) {
  let out = "";
  for (const ch of String(text)) {
    const code = ch.codePointAt(0);
    if (ch in VISIBLE) out += VISIBLE[ch];
    else if (code < 32 || code === 127) out += "�";
    else out += ch;
  }
  return out;
}

/** `text` cut to `maxChars` characters with an ellipsis. */
export function truncate(text, maxChars) {
  const chars = Array.from(text);
  return chars.length <= maxChars ? text : chars.slice(0, Math.max(1, maxChars - 1)).join("") + "…";
}

/** `"i:token"` (token made visible and truncated), or `"i"` without a token. */
export function positionLabel(i, tokens, maxChars = 10) {
  const token = tokens && i < tokens.length ? tokens[i] : "";
  return token ? `${i}:${truncate(displayToken(token), maxChars)}` : `${i}`;
}

/**
 * Where the axis titles go, a few pixels beyond the longest tick labels (not at the far edges of the
 * margins, which left them about 90 px from short labels): `xTitleBottom`, the baseline (bottom) of the x
 * title, and `yTitleCenter`, the x of the vertical y title's centre line; both kept inside the canvas.
 */
export function titlePositions(layout, rowLabelPx, colLabelPx, gap = 6) {
  const xTitleBottom = Math.min(layout.totalHeight - 2, layout.y + layout.height + 5 + colLabelPx + gap + 12);
  const yTitleCenter = Math.max(8, layout.x - 5 - rowLabelPx - gap - 6);
  return { xTitleBottom, yTitleCenter };
}

/**
 * Draw tick labels and titles around a heatmap layout on a 2D context: column labels below
 * (vertical text), row labels to the left (right-aligned). Labels read `"i:token"` unless
 * `rowLabel(i)` / `colLabel(j)` name them otherwise. Only the rows and columns of the layout's `view`
 * (lib/zoom.js; the whole map without one) are labelled, at round positions (`viewTicks`) at least
 * `spacingPx` apart.
 */
export function drawAxes(ctx, layout, { tokens, theme, xTitle, yTitle, spacingPx = 12, rowLabel, colLabel }) {
  const rowText = rowLabel ?? ((i) => positionLabel(i, tokens));
  const colText = colLabel ?? ((j) => positionLabel(j, tokens));
  const { x, y, width, height, rows, cols } = layout;
  const { r0, c0, nr, nc } = layout.view ?? { r0: 0, c0: 0, nr: rows, nc: cols };
  ctx.save();
  ctx.fillStyle = theme.fg;
  ctx.strokeStyle = theme.fg2;
  ctx.font = `10px ${theme.font}`;
  ctx.lineWidth = 1;
  const cw = width / nc;
  const rh = height / nr;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  let rowLabelPx = 0; // the longest tick label on each axis: the titles go just beyond them
  let colLabelPx = 0;
  for (const i of viewTicks(r0, nr, maxTicksFor(height, spacingPx))) {
    const cy = y + (i - r0 + 0.5) * rh;
    ctx.beginPath();
    ctx.moveTo(x - 3, cy);
    ctx.lineTo(x, cy);
    ctx.stroke();
    const label = rowText(i);
    rowLabelPx = Math.max(rowLabelPx, ctx.measureText(label).width);
    ctx.fillText(label, x - 5, cy);
  }
  for (const j of viewTicks(c0, nc, maxTicksFor(width, spacingPx))) {
    const cx = x + (j - c0 + 0.5) * cw;
    ctx.beginPath();
    ctx.moveTo(cx, y + height);
    ctx.lineTo(cx, y + height + 3);
    ctx.stroke();
    ctx.save();
    ctx.translate(cx, y + height + 5);
    ctx.rotate(-Math.PI / 2);
    const label = colText(j);
    colLabelPx = Math.max(colLabelPx, ctx.measureText(label).width);
    ctx.fillText(label, 0, 0);
    ctx.restore();
  }
  ctx.font = `11px ${theme.font}`;
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  const titles = titlePositions(layout, rowLabelPx, colLabelPx);
  ctx.fillText(xTitle, x + width / 2, titles.xTitleBottom);
  ctx.save();
  ctx.translate(titles.yTitleCenter, y + height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textBaseline = "middle";
  ctx.fillText(yTitle, 0, 0);
  ctx.restore();
  ctx.restore();
}
