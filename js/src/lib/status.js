// The progress/status line of a running job: done/total, rate, ETA, and which buttons apply.

/** `"42 s"`, `"3 min 05 s"`, `"2 h 07 min"`; `"–"` when unknown. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds) || seconds < 0) return "–";
  if (seconds < 1) return "<1 s";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

/** Units per second with about three significant digits: `"1234"`, `"12.3"`, `"0.512"`. */
export function formatRate(rate) {
  if (!Number.isFinite(rate) || rate <= 0) return "0";
  if (rate >= 100) return String(Math.round(rate));
  return String(Number(rate.toPrecision(3)));
}

/**
 * One line such as `running · 64 / 256 samples (25%) · 12.3 samples/s · ETA 15 s`.
 * @param {{status: string, done: number, total: number|null, rate: number, eta: number|null,
 *   elapsed?: number, message?: string}} s
 */
export function statusText(s, unit = "samples") {
  const parts = [s.status];
  const done = s.done ?? 0;
  if (s.total !== null && s.total !== undefined) {
    const pct = s.total > 0 ? Math.floor((100 * done) / s.total) : 100;
    parts.push(`${done} / ${s.total} ${unit} (${pct}%)`);
  } else {
    parts.push(`${done} ${unit}`);
  }
  if (s.status === "running" && s.rate > 0) parts.push(`${formatRate(s.rate)} ${unit}/s`);
  if ((s.status === "running" || s.status === "paused") && s.eta !== null && s.eta !== undefined) {
    parts.push(`ETA ${formatDuration(s.eta)}`);
  }
  if (s.status === "done" && s.elapsed > 0) parts.push(`in ${formatDuration(s.elapsed)}`);
  if (s.message && s.status !== "done") parts.push(s.message);
  return parts.join(" · ");
}

/** Which of the pause / resume / stop buttons can act in a job status. */
export function buttonStates(status) {
  const live = status === "running" || status === "pending" || status === "paused";
  return { pause: status === "running" || status === "pending", resume: status === "paused", stop: live };
}

/**
 * What a view shows in place of its chart before the first data: `waiting` while the job may still
 * deliver, the error once it failed (a job that fails before any data must not look like one that waits),
 * a note once it was stopped.
 */
export function emptyBodyText(status, message, waiting) {
  if (status === "error") return `the job failed: ${message || "unknown error"}`;
  if (status === "cancelled") return "stopped before any data";
  if (status === "done") return "no data";
  return waiting;
}
