// Colours and fonts from JupyterLab's CSS variables (light and dark themes); on other hosts (marimo,
// VS Code, Colab, a static HTML export) a view's root defines those variables from the host's own text and
// background colours (`adoptHostTheme`), so the same CSS and drawings follow a dark host too.

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

/** The --jp-* variables a view sets on its root where the page has no JupyterLab theme (marimo, VS Code,
 * Colab, a static page), made from the host's own text and background colours so that a dark host gives a
 * dark view: `{name: value}`, or null where JupyterLab's variables exist (they are used as they are).
 * @param {{jupyter: boolean, color: string, background: string | null}} host computed `color` and the
 *   painted background behind the view (CSS colours as `getComputedStyle` gives them: `rgb()`/`rgba()`)
 */
export function hostThemeVariables({ jupyter, color, background }) {
  if (jupyter) return null;
  const m = /^rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)/.exec(String(color ?? ""));
  const fg = m ? `rgb(${m[1]}, ${m[2]}, ${m[3]})` : FALLBACK.fg;
  const alpha = (a) => (m ? `rgba(${m[1]}, ${m[2]}, ${m[3]}, ${a})` : FALLBACK.fg2);
  const bg = background && !isTransparent(background) ? background : FALLBACK.bg;
  return {
    "--jp-ui-font-color1": fg,
    "--jp-ui-font-color2": alpha(0.7),
    "--jp-layout-color0": bg,
    "--jp-layout-color1": bg,
    "--jp-layout-color3": alpha(0.25),
    "--jp-border-color1": alpha(0.35),
    "--jp-border-color2": alpha(0.15),
    "--jp-warn-color3": "rgba(245, 124, 0, 0.15)",
  };
}

let probe = null;
const HOST_VARIABLES = Object.keys(hostThemeVariables({ jupyter: false, color: "", background: null }));

/** Set (or clear) the host's theme variables on a view's `root` (see `hostThemeVariables`), judged by the
 * element it sits in; a view not attached to a page yet is left alone. */
export function adoptHostTheme(root) {
  const host = root.parentElement ?? root.getRootNode?.().host;
  if (!host || !root.isConnected) return;
  const style = getComputedStyle(host);
  const jupyter = style.getPropertyValue("--jp-ui-font-color1").trim() !== "";
  // computed colours may read `color(srgb …)` or `oklch(…)` (marimo): resolved to rgb() by a canvas
  probe ??= document.createElement("canvas");
  probe.width = probe.height = 1;
  const rgb = (c) => `rgb(${cssToRGBA(c, probe).slice(0, 3).join(", ")})`;
  const behind = backgroundBehind(host);
  const vars = hostThemeVariables({ jupyter, color: rgb(style.color), background: behind && rgb(behind) });
  for (const name of HOST_VARIABLES) {
    if (vars) root.style.setProperty(name, vars[name]);
    else root.style.removeProperty(name);
  }
  root.dataset.theme = vars ? "host" : "jupyterlab";
}

/** Theme colours read from the element's computed style (a view's root first adopts its host's theme
 * where the page has no JupyterLab theme: `adoptHostTheme`). The background is the one the page paints behind
 * the view (the notebook's, in every theme), so that plot areas are not boxes of another shade (JupyterLab's
 * dark theme paints the notebook in --jp-layout-color0, darker than --jp-layout-color1). */
export function themeColors(el) {
  if (el.classList?.contains("tscope-root")) adoptHostTheme(el);
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
