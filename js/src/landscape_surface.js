// The 3D surface view of the LandscapeWidget (three.js, WebGL 2), bundled apart from the widget:
// the widget asks Python for this module's code the first time a view switches to 3D, so that 2D-only
// use does not pay for three.js. Every view owns one renderer and releases its WebGL context on
// dispose. Throws from `createSurfaceView` when WebGL is unavailable (the widget shows a message).
import {
  AmbientLight,
  BufferAttribute,
  BufferGeometry,
  Color,
  DirectionalLight,
  DoubleSide,
  Float32BufferAttribute,
  Line,
  LineBasicMaterial,
  LineSegments,
  LinearSRGBColorSpace,
  Mesh,
  MeshLambertMaterial,
  PerspectiveCamera,
  Points,
  PointsMaterial,
  Scene,
  Vector3,
  WebGLRenderer,
} from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { fitView, sceneBox, surfaceAxes, surfaceMesh, surfacePosition } from "./lib/surface.js";

const HEIGHT = 0.8; // scene units of the full colour domain (the base is 2 x 2)
const FOV = 40; // vertical field of view, degrees
const TARGET = [0, HEIGHT / 2, 0]; // the camera looks at the middle of the box
const VIEW_DIRECTION = [1.9, 1.45, 2.3]; // from the target towards the camera: front right, above
const FIT_MARGIN = 0.14; // of the half-width, for the labels that extend beyond their anchors
// The camera stays above the base (a polar angle short of 90 degrees), so a well is always seen from
// above and reads as a well: lower values are darker in the colour map and lower on the loss axis.
const MAX_POLAR = Math.PI / 2 - 0.08;
const LABEL_CSS =
  "position:absolute;left:0;top:0;pointer-events:none;white-space:nowrap;font-size:11px;line-height:1;" +
  "transform-origin:0 0;";

const probe = typeof document !== "undefined" ? document.createElement("canvas") : null;

/** A three.js colour from any CSS colour (resolved by a 2D canvas, so rgba() and names work too). */
function parseColor(css, fallback) {
  if (!css || !probe) return new Color(fallback);
  probe.width = probe.height = 1;
  const ctx = probe.getContext("2d", { willReadFrequently: true });
  ctx.clearRect(0, 0, 1, 1);
  ctx.fillStyle = fallback;
  ctx.fillStyle = css;
  ctx.fillRect(0, 0, 1, 1);
  const [r, g, b] = ctx.getImageData(0, 0, 1, 1).data;
  return new Color(r / 255, g / 255, b / 255);
}

/** Frame of the base square and a vertical edge, in scene units (see lib/surface.js). */
function frameGeometry() {
  const y = 0;
  const p = [-1, y, -1, 1, y, -1, 1, y, -1, 1, y, 1, 1, y, 1, -1, y, 1, -1, y, 1, -1, y, -1, -1, 0, 1, -1, HEIGHT, 1];
  const g = new BufferGeometry();
  g.setAttribute("position", new Float32BufferAttribute(p, 3));
  return g;
}

/**
 * A WebGL view of a landscape surface inside `container`.
 * @param {HTMLElement} container
 * @param {{width: number, height: number, theme: object}} options
 * @returns {{update: (state: object) => void, resize: (w: number, h: number) => void,
 *   render: () => void, dispose: () => void, canvas: HTMLCanvasElement}}
 */
export function createSurfaceView(container, { width = 480, height = 400, theme }) {
  const renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
  renderer.outputColorSpace = LinearSRGBColorSpace; // vertex colours are already display colours
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setSize(width, height);
  renderer.setClearColor(parseColor(theme.bg, "#ffffff"));
  const canvas = renderer.domElement;
  canvas.classList.add("tscope-surface-canvas");
  container.append(canvas);

  if (!container.style.position) container.style.position = "relative";
  const labelLayer = document.createElement("div");
  labelLayer.className = "tscope-surface-labels";
  labelLayer.style.cssText = "position:absolute;left:0;top:0;overflow:hidden;pointer-events:none;";
  container.append(labelLayer);

  const scene = new Scene();
  // Lambert shading divides by pi: the ambient light keeps 55% of the colour-map colour, and a light
  // from almost straight above adds up to 50% on flat ground, less on slopes (walls of a well are
  // darker than its floor and the rim, as under daylight).
  scene.add(new AmbientLight(0xffffff, 0.55 * Math.PI));
  const sun = new DirectionalLight(0xffffff, 0.5 * Math.PI);
  sun.position.set(0.4, 3, 0.8);
  scene.add(sun);

  const camera = new PerspectiveCamera(FOV, width / height, 0.01, 100);
  const controls = new OrbitControls(camera, canvas);
  controls.maxPolarAngle = MAX_POLAR;
  let size = [width, height];
  /** Camera back at the fitted distance for the current aspect: the box with its labels fills the view. */
  const fit = () => {
    const aspect = size[0] / size[1];
    const view = { target: TARGET, direction: VIEW_DIRECTION, fov: FOV, aspect, margin: FIT_MARGIN };
    const { target, distance } = fitView(sceneBox(HEIGHT), view);
    const d = new Vector3(...VIEW_DIRECTION).normalize().multiplyScalar(distance);
    camera.position.set(target[0] + d.x, target[1] + d.y, target[2] + d.z);
    camera.aspect = aspect;
    camera.updateProjectionMatrix();
    controls.target.set(...target);
    controls.update();
    canvas.dataset.fit = distance.toFixed(4);
  };
  fit();

  const axisGeometry = new BufferGeometry();
  const axisLines = new LineSegments(axisGeometry, new LineBasicMaterial({ color: parseColor(theme.fg2, "#616161") }));
  scene.add(axisLines);
  let labels = []; // {element, at: Vector3}
  let labelColors = { fg: theme.fg ?? "#1f1f1f", fg2: theme.fg2 ?? "#616161" };
  /** The labels' pixel positions under the current camera; a label behind the camera is hidden. */
  const placeLabels = () => {
    const [w, h] = size;
    labelLayer.style.width = `${w}px`;
    labelLayer.style.height = `${h}px`;
    const v = new Vector3();
    for (const { element, at } of labels) {
      v.copy(at).project(camera);
      const visible = v.z < 1 && Math.abs(v.x) <= 1.2 && Math.abs(v.y) <= 1.2;
      element.style.display = visible ? "" : "none";
      const x = ((v.x + 1) / 2) * w;
      const y = ((1 - v.y) / 2) * h;
      element.style.transform = `translate(${x.toFixed(1)}px, ${y.toFixed(1)}px) translate(-50%, -50%)`;
    }
  };
  const setAxes = (axes) => {
    axisGeometry.setAttribute("position", new Float32BufferAttribute(axes.segments, 3));
    axisGeometry.computeBoundingSphere();
    const made = [];
    const add = (text, at, className, axis, color, weight) => {
      const element = document.createElement("span");
      element.className = className;
      element.dataset.axis = axis;
      element.textContent = text;
      element.style.cssText = LABEL_CSS + `color:${color};font-weight:${weight};`;
      made.push({ element, at: new Vector3(...at) });
    };
    for (const t of axes.ticks) add(t.label, t.at, "tscope-surface-tick", t.axis, labelColors.fg2, "normal");
    for (const t of axes.titles) add(t.text, t.at, "tscope-surface-title", t.axis, labelColors.fg, "bold");
    labelLayer.replaceChildren(...made.map((m) => m.element));
    labels = made;
  };

  const geometry = new BufferGeometry();
  const material = new MeshLambertMaterial({ vertexColors: true, side: DoubleSide });
  const surface = new Mesh(geometry, material);
  scene.add(surface);

  const frame = new LineSegments(frameGeometry(), new LineBasicMaterial({ color: parseColor(theme.fg2, "#616161") }));
  scene.add(frame);

  const pathGeometry = new BufferGeometry();
  const accent = new Color("#e91e63"); // the trajectory's colour in every view
  const path = new Line(pathGeometry, new LineBasicMaterial({ color: accent }));
  const markers = new Points(pathGeometry, new PointsMaterial({ color: accent, size: 6, sizeAttenuation: false }));
  scene.add(path, markers);

  let frameRequest = 0;
  const render = () => {
    frameRequest = 0;
    renderer.render(scene, camera);
    placeLabels();
  };
  const requestRender = () => {
    if (!frameRequest) frameRequest = requestAnimationFrame(render);
  };
  controls.addEventListener("change", requestRender);

  return {
    canvas,
    render,
    /** Show a grid: `{values, A, B, alphas, betas, domain, log, lut, trajectory: [T, 2] | null, valueTitle}`. */
    update({ values, A, B, alphas, betas, domain, log, lut, trajectory, valueTitle = "loss" }) {
      setAxes(surfaceAxes({ alphas, betas, domain, log, height: HEIGHT, titles: { value: valueTitle } }));
      const mesh = surfaceMesh(values, A, B, { alphas, betas, domain, log, lut, height: HEIGHT });
      geometry.setAttribute("position", new BufferAttribute(mesh.positions, 3));
      geometry.setAttribute("color", new BufferAttribute(mesh.colors, 3));
      geometry.setIndex(new BufferAttribute(mesh.indices, 1));
      geometry.computeVertexNormals();
      geometry.computeBoundingSphere();
      const points = [];
      if (trajectory) {
        for (let t = 0; t < trajectory.length / 2; t++) {
          const p = surfacePosition(values, A, B, { alphas, betas, domain, log, height: HEIGHT }, trajectory[2 * t], trajectory[2 * t + 1]);
          if (p && Math.abs(p[0]) <= 1 && Math.abs(p[2]) <= 1) points.push(p[0], p[1] + 0.01, p[2]);
        }
      }
      pathGeometry.setAttribute("position", new Float32BufferAttribute(points, 3));
      pathGeometry.computeBoundingSphere();
      requestRender();
      return mesh.quads;
    },
    /** New size in CSS pixels; the camera is fitted again (the box with its labels fills the view). */
    resize(w, h) {
      renderer.setSize(w, h);
      size = [w, h];
      fit();
      requestRender();
    },
    /** Back to the fitted view after the user rotated or zoomed. */
    resetView() {
      fit();
      requestRender();
    },
    setTheme(next) {
      renderer.setClearColor(parseColor(next.bg, "#ffffff"));
      frame.material.color = parseColor(next.fg2, "#616161");
      axisLines.material.color = parseColor(next.fg2, "#616161");
      labelColors = { fg: next.fg ?? "#1f1f1f", fg2: next.fg2 ?? "#616161" };
      for (const { element } of labels) {
        element.style.color = element.classList.contains("tscope-surface-title") ? labelColors.fg : labelColors.fg2;
      }
      requestRender();
    },
    dispose() {
      if (frameRequest) cancelAnimationFrame(frameRequest);
      controls.dispose();
      for (const object of [surface, frame, axisLines, path, markers]) {
        object.geometry.dispose();
        object.material.dispose();
      }
      renderer.dispose();
      renderer.forceContextLoss();
      canvas.remove();
      labelLayer.remove();
    },
  };
}
