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
