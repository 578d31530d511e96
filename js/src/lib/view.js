// Lifecycle of one widget view: DOM and model listeners that go away together, and repaints when
// JupyterLab switches theme or when a view drawn before it was attached (empty CSS variables) is attached.

const THEME_ATTRIBUTES = ["data-jp-theme-light", "data-jp-theme-name"];

export function viewLifecycle(model) {
  const abort = new AbortController();
  const subscriptions = [];
  const cleanups = [];
  let closed = false;

  const life = {
    get closed() {
      return closed;
    },
    /** addEventListener, removed when the view is disposed. */
    on: (target, type, fn) => target.addEventListener(type, fn, { signal: abort.signal }),
    /** model.on, undone when the view is disposed. */
    listen: (name, fn) => {
      model.on(name, fn);
      subscriptions.push([name, fn]);
    },
    /** Run `fn` when the view is disposed (before `root` is removed). */
    onDispose: (fn) => cleanups.push(fn),
    /** Call `repaint` on theme switches and once `root` is in the page; `root` is removed on dispose. */
    repaintWhenNeeded: (root, repaint) => {
      const themeObserver = new MutationObserver(repaint);
      themeObserver.observe(document.body, { attributes: true, attributeFilter: THEME_ATTRIBUTES });
      let attachFrame = 0;
      const whenAttached = () => {
        if (closed) return;
        if (root.isConnected) repaint();
        else attachFrame = requestAnimationFrame(whenAttached);
      };
      if (!root.isConnected) attachFrame = requestAnimationFrame(whenAttached);
      cleanups.push(() => {
        cancelAnimationFrame(attachFrame);
        themeObserver.disconnect();
      });
      cleanups.push(() => root.remove());
    },
    /** The cleanup function a render() returns. */
    dispose: () => {
      closed = true;
      for (const [name, fn] of subscriptions) model.off(name, fn);
      abort.abort();
      for (const fn of cleanups) fn();
    },
  };
  return life;
}
