// Colours and fonts from JupyterLab's CSS variables (light and dark themes), with fallbacks
// for other hosts (classic Notebook, VS Code, a static HTML export).

const FALLBACK = {
  fg: "#1f1f1f",
  fg2: "#616161",
  bg: "#ffffff",
  border: "#bdbdbd",
  accent: "#e91e63",
  error: "#d32f2f",
  nan: "#c7c7c7",
  font: "system-ui, -apple-system, 'Segoe UI', sans-serif",
};

/** Whether a computed CSS colour paints nothing (`transparent`, or an alpha of 0). */
export function isTransparent(color) {
  const c = String(color ?? "").replace(/\s+/g, "").toLowerCase();
  return c === "" || c === "transparent" || /^rgba\([^)]*,0(\.0*)?\)$/.test(c);
}

/** The colour the page shows behind `el`: the first painted background of it or its ancestors, or null. */
export function backgroundBehind(el) {
  for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
    const color = getComputedStyle(node).backgroundColor;
    if (!isTransparent(color)) return color;
  }
  return null;
}

/** Theme colours read from the element's computed style. The background is the one the page paints behind
 * the view (the notebook's, in every theme), so that plot areas are not boxes of another shade (JupyterLab's
 * dark theme paints the notebook in --jp-layout-color0, darker than --jp-layout-color1). */
export function themeColors(el) {
  const style = getComputedStyle(el);
  const v = (name, key) => style.getPropertyValue(name).trim() || FALLBACK[key];
  return {
    fg: v("--jp-ui-font-color1", "fg"),
    fg2: v("--jp-ui-font-color2", "fg2"),
    bg: backgroundBehind(el) ?? v("--jp-layout-color0", "bg"),
    border: v("--jp-border-color1", "border"),
    accent: v("--jp-accent-color1", "accent"),
    error: v("--jp-error-color1", "error"),
    nan: v("--jp-layout-color3", "nan"),
    font: v("--jp-ui-font-family", "font"),
  };
}

/** `[r, g, b, 255]` of a CSS colour, resolved by a 1x1 canvas (handles every CSS syntax). */
export function cssToRGBA(color, probe) {
  const ctx = probe.getContext("2d", { willReadFrequently: true });
  ctx.clearRect(0, 0, 1, 1);
  ctx.fillStyle = "#000";
  ctx.fillStyle = color;
  ctx.fillRect(0, 0, 1, 1);
  const d = ctx.getImageData(0, 0, 1, 1).data;
  return [d[0], d[1], d[2], 255];
}
