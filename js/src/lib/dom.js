// Tiny DOM builders (HTML and SVG elements with attributes and children).

const SVG_NS = "http://www.w3.org/2000/svg";

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === "string" || typeof c === "number" ? String(c) : c);
  }
  return node;
}

/** `h("div", {class: "x"}, child, "text")` */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** `s("path", {d: "M0 0"})` in the SVG namespace. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Fill a <select> with `options` (rebuilt only when they change) and select `value`; option values are indices. */
export function fillSelect(select, options, value, title) {
  const key = JSON.stringify(options);
  if (select.dataset.options !== key) {
    select.replaceChildren(...options.map((o, k) => h("option", { value: String(k) }, title(o))));
    select.dataset.options = key;
  }
  select.value = String(Math.max(0, options.indexOf(value)));
}

/** Size `canvas` to `width x height` CSS pixels at the device pixel ratio; returns its 2D context in CSS
 * pixels, filled with `background` (or cleared when it is null). */
export function sizeCanvas(canvas, width, height, background = null) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  if (background === null) ctx.clearRect(0, 0, width, height);
  else {
    ctx.fillStyle = background;
    ctx.fillRect(0, 0, width, height);
  }
  return ctx;
}
