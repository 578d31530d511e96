// Where a hover tooltip goes: above and to the right of the pointer, so that it never covers the x tick
// labels under a plot (a tooltip below the pointer hid them while hovering the bottom rows); below the
// pointer only where there is no room above, and to its left where there is no room on the right.

/**
 * Top-left corner of a `width x height` tooltip for a pointer at `(x, y)`, all in the coordinates of the
 * positioned box that holds the tooltip (`boxWidth` wide).
 * @returns {{left: number, top: number}}
 */
export function tooltipPosition({ x, y, width, height, boxWidth = Infinity, gap = 12 }) {
  let top = y - gap - height;
  if (top < 0) top = y + gap + 8; // no room above: below, clear of the pointer
  let left = x + gap;
  if (left + width > boxWidth) left = Math.max(0, x - gap - width);
  return { left, top };
}

/** Show `tooltip` (an absolutely positioned element inside `box`) with `lines` next to the pointer event. */
export function showTooltip(tooltip, box, lines, event) {
  tooltip.textContent = lines.join("\n");
  tooltip.style.display = "block";
  const rect = box.getBoundingClientRect();
  const { left, top } = tooltipPosition({
    x: event.clientX - rect.left,
    y: event.clientY - rect.top,
    width: tooltip.offsetWidth,
    height: tooltip.offsetHeight,
    boxWidth: Math.max(rect.width, document.documentElement.clientWidth - rect.left),
  });
  tooltip.style.left = `${left}px`;
  tooltip.style.top = `${top}px`;
}
