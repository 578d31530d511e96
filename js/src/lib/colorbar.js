// A vertical colour bar drawn on a 2D canvas context.
import { colorbarTicks } from "./scales.js";

/**
 * Draw the lookup table as a bar at (x, y, width, height), high values at the top, with tick labels
 * on its right and a rotated title beyond them.
 */
export function drawColorbar(ctx, { x, y, width, height, lut, domain, log, title, theme }) {
  const n = lut.length / 3;
  for (let k = 0; k < n; k++) {
    const y0 = y + height - ((k + 1) * height) / n;
    ctx.fillStyle = `rgb(${lut[3 * k]},${lut[3 * k + 1]},${lut[3 * k + 2]})`;
    ctx.fillRect(x, y0, width, height / n + 0.5);
  }
  ctx.save();
  ctx.strokeStyle = theme.fg2;
  ctx.fillStyle = theme.fg;
  ctx.lineWidth = 1;
  ctx.strokeRect(x + 0.5, y + 0.5, width - 1, height - 1);
  ctx.font = `10px ${theme.font}`;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  for (const tick of colorbarTicks(domain, log, 5)) {
    const ty = y + height - tick.t * height;
    ctx.beginPath();
    ctx.moveTo(x + width, ty);
    ctx.lineTo(x + width + 3, ty);
    ctx.stroke();
    ctx.fillText(tick.label, x + width + 5, ty);
  }
  ctx.font = `11px ${theme.font}`;
  ctx.translate(x + width + 52, y + height / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText(title, 0, 0);
  ctx.restore();
}
