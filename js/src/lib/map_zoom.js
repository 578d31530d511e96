// Zoom, pan and brush of one heatmap canvas (the sensitivity explorer's map): the buttons, the pointer
// gestures and the chosen view. The view maths is in lib/zoom.js; the owner paints.
//   wheel          zoom around the pointer
//   drag           pan (whole cells; the map follows the pointer)
//   shift-drag, or a drag with "brush" pressed: zoom to the brushed square
//   "reset zoom"   the opening view; "whole map": every cell
import { h } from "./dom.js";
import { cellAt } from "./heatmap.js";
import { brushView, clampView, dragView, fullView, zoomView } from "./zoom.js";

const DRAG_PX = 3; // a press that moves less is a click

/**
 * Wire zooming on `canvas`. `layout()` is the layout last painted (lib/heatmap.js, with its `view`) or null;
 * `repaint()` asks the owner to paint again (it then asks `view(...)` and `brushCells()`); `hideTooltip()` runs
 * when a drag starts. Listeners are added with `on` (lib/view.js), so they go with the view.
 */
export function mapZoom({ canvas, on, layout, repaint, hideTooltip }) {
  const resetButton = h("button", { type: "button", class: "tscope-zoom-reset", title: "back to the opening view" }, "reset zoom");
  const wholeButton = h("button", { type: "button", class: "tscope-zoom-whole", title: "show every cell" }, "whole map");
  const brushButton = h(
    "button",
    { type: "button", class: "tscope-brush", "aria-pressed": "false", title: "drag a square to zoom to it (or shift-drag)" },
    "brush",
  );
  const buttons = h("span", { class: "tscope-zoom" }, resetButton, wholeButton, brushButton);
  let zoom = null; // the chosen view, or null for the opening one
  let shape = ""; // "rows x cols" the zoom belongs to: a map of another size opens afresh
  let gesture = null; // a press on the map: pan or brush
  let brushing = false;
  let ignoreClick = false;

  const point = (event) => {
    const L = layout();
    const box = canvas.getBoundingClientRect();
    return { x: ((event.clientX - box.left) * L.totalWidth) / box.width, y: ((event.clientY - box.top) * L.totalHeight) / box.height };
  };
  const cellOf = (event, clamp = false) => {
    const L = layout();
    let { x, y } = point(event);
    if (clamp) {
      x = Math.min(L.x + L.width - 1e-6, Math.max(L.x, x));
      y = Math.min(L.y + L.height - 1e-6, Math.max(L.y, y));
    }
    return cellAt(L, x, y);
  };
  const setZoom = (view) => {
    const L = layout();
    if (!L) return;
    zoom = clampView(view, L.rows, L.cols);
    repaint();
  };

  on(canvas, "wheel", (event) => {
    const L = layout();
    if (!L || !cellOf(event)) return; // outside the plot: the page scrolls
    event.preventDefault();
    const { x, y } = point(event);
    const lines = event.deltaMode === 1 ? 16 : event.deltaMode === 2 ? 400 : 1;
    const factor = Math.min(2, Math.max(0.5, Math.exp(-event.deltaY * lines * 0.002)));
    if (factor === 1) return;
    setZoom(zoomView(L.view, L.rows, L.cols, factor, (x - L.x) / L.width, (y - L.y) / L.height));
  });
  on(canvas, "mousedown", (event) => {
    const L = layout();
    if (event.button !== 0 || !L) return;
    const start = cellOf(event);
    if (!start) return;
    event.preventDefault(); // no text selection while dragging
    const { x, y } = point(event);
    gesture = { x, y, view: L.view, brush: brushing || event.shiftKey, moved: false, start, end: start };
  });
  on(window, "mousemove", (event) => {
    const L = layout();
    if (!gesture || !L) return;
    const { x, y } = point(event);
    if (!gesture.moved && Math.hypot(x - gesture.x, y - gesture.y) < DRAG_PX) return;
    gesture.moved = true;
    hideTooltip();
    if (gesture.brush) {
      gesture.end = cellOf(event, true);
      repaint();
    } else {
      canvas.classList.add("tscope-panning");
      setZoom(dragView(gesture.view, L.rows, L.cols, x - gesture.x, y - gesture.y, L.width, L.height));
    }
  });
  on(window, "mouseup", () => {
    if (!gesture) return;
    const done = gesture;
    gesture = null;
    canvas.classList.remove("tscope-panning");
    ignoreClick = done.moved; // the click that ends a drag selects nothing
    const L = layout();
    if (done.moved && done.brush && L) setZoom(brushView(done.start, done.end, L.rows, L.cols));
    else if (done.moved) repaint();
  });
  on(resetButton, "click", () => {
    zoom = null;
    repaint();
  });
  on(wholeButton, "click", () => {
    const L = layout();
    if (L) setZoom(fullView(L.rows, L.cols));
  });
  on(brushButton, "click", () => {
    brushing = !brushing;
    brushButton.setAttribute("aria-pressed", String(brushing));
  });

  return {
    buttons,
    /** The view to paint a `rows x cols` map with: the chosen one, or `opening`. */
    view(rows, cols, opening) {
      const key = `${rows}x${cols}`;
      if (shape !== key) {
        shape = key;
        zoom = null;
      }
      return zoom ? clampView(zoom, rows, cols) : opening;
    },
    /** The two corner cells of a brush being dragged, or null. */
    brushCells: () => (gesture && gesture.brush && gesture.moved ? [gesture.start, gesture.end] : null),
    /** Whether a press is in progress (no hover tooltip then). */
    busy: () => gesture !== null,
    /** Whether this click ends a drag (and is to be ignored); each drag ignores one click. */
    takeClick() {
      const ignore = ignoreClick;
      ignoreClick = false;
      return ignore;
    },
    /** Show or hide the buttons; enable "reset zoom" off the opening view and "whole map" off the whole map. */
    update({ shown, opening, whole }) {
      buttons.style.display = shown ? "" : "none";
      resetButton.disabled = opening;
      wholeButton.disabled = whole;
    },
  };
}
