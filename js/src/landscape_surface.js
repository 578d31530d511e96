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
  WebGLRenderer,
} from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { surfaceMesh, surfacePosition } from "./lib/surface.js";

const HEIGHT = 0.8; // scene units of the full colour domain (the base is 2 x 2)

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

  const scene = new Scene();
  // Lambert shading divides by pi: an ambient intensity of 0.7 pi keeps 70% of the colour-map colour.
  scene.add(new AmbientLight(0xffffff, 0.7 * Math.PI));
  const sun = new DirectionalLight(0xffffff, 0.45 * Math.PI);
  sun.position.set(1.5, 3, 2);
  scene.add(sun);

  const camera = new PerspectiveCamera(40, width / height, 0.01, 100);
  camera.position.set(1.9, 1.7, 2.3);
  const controls = new OrbitControls(camera, canvas);
  controls.target.set(0, HEIGHT / 3, 0);
  controls.update();

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
  };
  const requestRender = () => {
    if (!frameRequest) frameRequest = requestAnimationFrame(render);
  };
  controls.addEventListener("change", requestRender);

  return {
    canvas,
    render,
    /** Show a grid: `{values, A, B, alphas, betas, domain, log, lut, trajectory: [T, 2] | null}`. */
    update({ values, A, B, alphas, betas, domain, log, lut, trajectory }) {
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
    resize(w, h) {
      renderer.setSize(w, h);
      camera.aspect = w / h;
      camera.updateProjectionMatrix();
      requestRender();
    },
    setTheme(next) {
      renderer.setClearColor(parseColor(next.bg, "#ffffff"));
      frame.material.color = parseColor(next.fg2, "#616161");
      requestRender();
    },
    dispose() {
      if (frameRequest) cancelAnimationFrame(frameRequest);
      controls.dispose();
      for (const object of [surface, frame, path, markers]) {
        object.geometry.dispose();
        object.material.dispose();
      }
      renderer.dispose();
      renderer.forceContextLoss();
      canvas.remove();
    },
  };
}
