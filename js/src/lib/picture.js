// Static pictures of a widget (Python: tscope_widgets/widgets/_static.py) and the live view.
//
// A notebook output showing a widget is followed by a picture of it, an HTML element
// `.tscope-static[data-picture-id="<id>"]` (the id is the widget's model id). A live view puts the CSS
// below into the page while it is there, so that the page does not show the widget twice. Every
// widget's view does this (the Python side is shared too: tscope_widgets/widgets/_display.py).

const PICTURE_ID = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * CSS that hides every static picture with this id; "" for a missing or malformed id (the id comes
 * from the model, and is never put into CSS unless it is plain letters, digits, "_" or "-").
 * @param {unknown} pictureId
 * @returns {string}
 */
export function pictureHidingCSS(pictureId) {
  if (typeof pictureId !== "string" || !PICTURE_ID.test(pictureId)) return "";
  return `\n.tscope-static[data-picture-id="${pictureId}"] { display: none; }\n`;
}
