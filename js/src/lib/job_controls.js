// The job controls of a widget that runs one kernel in a background job (SensitivityExplorer,
// LandscapeWidget): pause / resume / stop buttons that send `{type: "command", command}` messages, and a
// status line fed by the traits status, message, done, total, rate, eta, elapsed (see _controls.py).
import { h } from "./dom.js";
import { buttonStates, statusText } from "./status.js";

export const STATUS_TRAITS = ["status", "message", "done", "total", "rate", "eta", "elapsed"];
export const COMMANDS = ["pause", "resume", "stop"];

/** The status line element (a polite live region), shared by every widget. */
export function statusLine() {
  return h("div", { class: "tscope-status", role: "status", "aria-live": "polite" });
}

/**
 * What the controls show for a job: the status line's text, whether it is an error, which buttons act.
 * @param {(name: string) => any} get  reads a trait (`model.get`)
 * @param {string} counted  what `done`/`total` count ("samples", "rows")
 */
export function jobStatusView(get, counted = "samples") {
  const s = Object.fromEntries(STATUS_TRAITS.map((k) => [k, get(k)]));
  return { status: s.status, text: statusText(s, counted), error: s.status === "error", enabled: buttonStates(s.status) };
}

/**
 * Pause / resume / stop buttons (in one span, for a toolbar) and a status line.
 * @param {{unit: string, keeps: string, counted?: string}} what  `unit`: the work between two snapshots
 *   ("batch", "row"), which pause and stop wait for; `keeps`: what a stop keeps; `counted`: as in jobStatusView
 */
export function jobControls({ unit, keeps, counted = "samples" }) {
  const buttons = {
    pause: h("button", { type: "button", title: `pause after the ${unit} in flight` }, "pause"),
    resume: h("button", { type: "button" }, "resume"),
    stop: h("button", { type: "button", title: `stop after the ${unit} in flight; keeps ${keeps}` }, "stop"),
  };
  const line = statusLine();
  return {
    buttons: h("span", {}, buttons.pause, " ", buttons.resume, " ", buttons.stop),
    statusLine: line,
    /** Show the job's state; `root.dataset.status` carries the status (browser tests read it). */
    draw(model, root) {
      const view = jobStatusView((k) => model.get(k), counted);
      line.textContent = view.text;
      line.classList.toggle("tscope-error", view.error);
      for (const command of COMMANDS) buttons[command].disabled = !view.enabled[command];
      root.dataset.status = view.status;
    },
    /** Send each button's command; redraw (`redraw()`) when a status trait changes. */
    wire(model, { on, listen }, redraw) {
      for (const command of COMMANDS) on(buttons[command], "click", () => model.send({ type: "command", command }));
      for (const name of STATUS_TRAITS) listen(`change:${name}`, redraw);
    },
  };
}
