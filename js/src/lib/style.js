// The look every widget shares (fonts, toolbar, controls, status line), scoped to its root class and drawn
// from JupyterLab's --jp-* theme variables, with fallbacks for pages without them.

export function baseCss(root) {
  return `
${root} { font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, #1f1f1f); }
${root} .tscope-toolbar { display: flex; flex-wrap: wrap; gap: 6px 12px; align-items: center; }
${root} label { display: inline-flex; gap: 4px; align-items: center; }
${root} select, ${root} button { font: inherit; color: inherit;
  background: var(--jp-layout-color1, #fff); border: 1px solid var(--jp-border-color1, #bdbdbd);
  border-radius: 2px; padding: 1px 6px; }
${root} button:disabled { opacity: 0.4; }
${root} .tscope-status { color: var(--jp-ui-font-color2, #616161); margin: 4px 0 6px; min-height: 1.3em; }
${root} .tscope-status.tscope-error { color: var(--jp-error-color1, #d32f2f); }
`;
}
