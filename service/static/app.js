// MargiPose Serve demo page: upload an image, optionally draw a box, POST it to v1/predict
// with float16 heatmaps, and draw the result: 2D skeleton with 1-sigma ellipses, a 3D view
// (orthographic canvas projection, drag to rotate), the joint table and one joint's marginals.
// Plain browser JavaScript, no libraries; URLs are relative so the page works under a prefix.
"use strict";

const LEFT = "#2896ff", RIGHT = "#ff6428", CENTRE = "#5adc6e", HEAD_TOP = "#ffe600";
const MARKER = "#00ffff";
const PERSON_COLOURS = ["#ebebeb", "#c88cff", "#ff96c8", "#96e6e6", "#bebe6e"];
const VIEW = { azimuth: 45, elevation: 20 };  // degrees, as service/render.py
// A few control points of matplotlib's inferno (as service/render.py), interpolated linearly.
const INFERNO = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
const PLANES = ["xy", "zy", "xz"];
const PLANE_AXES = { xy: [0, 1], zy: [2, 1], xz: [0, 2] };  // normalised (x, y, z) index: column, row

const $ = (id) => document.getElementById(id);
const state = {
  file: null, image: null, box: null, drag: null, result: null, model: null,
  joint: "left_wrist", view: { ...VIEW }, heatmaps: null,
};

function sideColour(name) {
  if (name.startsWith("left_")) return LEFT;
  if (name.startsWith("right_")) return RIGHT;
  return CENTRE;
}

function setStatus(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + kind;
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body.error) return `${response.status} ${body.error.code}: ${body.error.message}`;
  } catch (_) { /* not our JSON */ }
  return `${response.status} ${response.statusText}`;
}

// ---- model ----------------------------------------------------------------------------------

async function loadModel() {
  const response = await fetch("v1/model", { headers: authHeaders() });
  if (!response.ok) {
    $("model").textContent = "model: " + await errorText(response);
    return;
  }
  state.model = await response.json();
  const m = state.model;
  const source = m.card && m.card.source ? ` · ${m.card.source}` : "";
  $("model").innerHTML = "";
  const b = document.createElement("b");
  b.textContent = `${m.name} v${m.version}`;
  $("model").append(b, ` on ${m.backend}${source}`);
  const select = $("joint");
  select.innerHTML = "";
  for (const name of m.joints) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    select.append(option);
  }
  select.value = state.joint;
}

// ---- image, box and prediction --------------------------------------------------------------

function loadFile(file) {
  if (!file) return;
  state.file = file;
  state.box = null;
  state.result = null;
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    state.image = image;
    const canvas = $("overlay");
    const scale = Math.min(1, 1280 / Math.max(image.naturalWidth, image.naturalHeight));
    canvas.width = Math.round(image.naturalWidth * scale);
    canvas.height = Math.round(image.naturalHeight * scale);
    $("drop").classList.add("loaded");
    $("run").disabled = false;
    $("clear-box").disabled = true;
    drawOverlay();
    predict();
  };
  image.onerror = () => setStatus(`${file.name} is not an image this browser can show`, "error");
  image.src = url;
}

async function predict() {
  if (!state.file) return;
  if (!state.model) await loadModel();
  const form = new FormData();
  form.append("image", state.file, state.file.name || "image");
  form.append("heatmaps", "f16");
  if (state.box) {
    const b = state.box;
    form.append("boxes", JSON.stringify([[b.x, b.y, b.w, b.h].map((v) => Math.round(v))]));
  }
  document.body.dataset.state = "busy";
  setStatus("Estimating…", "busy");
  const started = performance.now();
  let response;
  try {
    response = await fetch("v1/predict", { method: "POST", body: form, headers: authHeaders() });
  } catch (err) {
    document.body.dataset.state = "error";
    setStatus("The service did not answer: " + err.message, "error");
    return;
  }
  if (!response.ok) {
    document.body.dataset.state = "error";
    setStatus(await errorText(response), "error");
    return;
  }
  state.result = await response.json();
  const first = state.result.persons[0];
  state.heatmaps = first && first.heatmaps ? decodeHeatmaps(first.heatmaps) : null;
  const n = state.result.persons.length;
  const ms = Math.round(performance.now() - started);
  const boxText = state.box ? "in your box"
    : first && first.box_source === "detector" ? "found by the person detector"
    : n === 0 ? "found: nobody above the detector's score" : "found automatically";
  setStatus(`${n} person${n === 1 ? "" : "s"} ${boxText} · ${ms} ms round trip · ` +
            `server ${Math.round(state.result.timings_ms.total)} ms`);
  renderAll();
  document.body.dataset.state = "done";
}

// Overlay canvas pixels per image pixel (the browser, like the service, applies EXIF
// orientation, so both count the same pixels).
function imageScale() {
  return $("overlay").width / state.image.naturalWidth;
}

function canvasPoint(event) {
  const canvas = $("overlay");
  const rect = canvas.getBoundingClientRect();
  const s = canvas.width / rect.width / imageScale();
  return [(event.clientX - rect.left) * s, (event.clientY - rect.top) * s];
}

function setupBoxDrawing() {
  const canvas = $("overlay");
  canvas.addEventListener("pointerdown", (event) => {
    if (!state.image) return;
    canvas.setPointerCapture(event.pointerId);
    state.drag = { start: canvasPoint(event), end: canvasPoint(event) };
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!state.drag) return;
    state.drag.end = canvasPoint(event);
    drawOverlay();
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!state.drag) return;
    const [x0, y0] = state.drag.start, [x1, y1] = canvasPoint(event);
    state.drag = null;
    const w = Math.abs(x1 - x0), h = Math.abs(y1 - y0);
    if (w >= 8 && h >= 8) {  // a click is not a box
      state.box = { x: Math.min(x0, x1), y: Math.min(y0, y1), w, h };
      $("clear-box").disabled = false;
      predict();
    }
    drawOverlay();
  });
}

// ---- drawing: overlay -----------------------------------------------------------------------

function bones() {
  const m = state.model;
  if (!m) return [];
  return m.parents.map((p, j) => [j, p]).filter(([j, p]) => j !== p);
}

function drawOverlay() {
  const canvas = $("overlay"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.image) return;
  ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  const s = imageScale();
  const line = Math.max(2, canvas.width / 300);
  const result = state.result;
  if (result) {
    result.persons.forEach((person, i) => {
      const colour = PERSON_COLOURS[i % PERSON_COLOURS.length];
      const b = person.box;
      ctx.strokeStyle = colour;
      ctx.lineWidth = 1;
      ctx.setLineDash([5, 4]);
      ctx.strokeRect(b.x * s, b.y * s, b.w * s, b.h * s);
      ctx.setLineDash([]);
      if (person.detection_score != null) {  // found by the person detector: its score
        ctx.fillStyle = colour;
        ctx.font = `${Math.max(12, canvas.width / 70)}px sans-serif`;
        const tx = Math.min(Math.max(b.x * s + 4, 2), canvas.width - 60);
        const ty = Math.min(Math.max(b.y * s + 16, 14), canvas.height - 4);
        ctx.fillText(`#${i} ${person.detection_score.toFixed(2)}`, tx, ty);
      }
      const joints = person.joints;
      const k = result.intrinsics;
      // 1-sigma ellipses: the camera-axis spread projected at the joint's depth.
      for (const j of joints) {
        const z = Math.max(j.camera_mm[2], 1);
        const rx = (k.fx * j.uncertainty_mm[0] / z) * s, ry = (k.fy * j.uncertainty_mm[1] / z) * s;
        ctx.beginPath();
        ctx.ellipse(j.pixel[0] * s, j.pixel[1] * s, Math.max(rx, 1), Math.max(ry, 1), 0, 0,
                    2 * Math.PI);
        ctx.fillStyle = "rgba(255,255,255,0.10)";
        ctx.fill();
        ctx.strokeStyle = "rgba(255,255,255,0.35)";
        ctx.lineWidth = 1;
        ctx.stroke();
      }
      ctx.lineCap = "round";
      for (const [c, p] of bones()) {
        bone(ctx, [joints[c].pixel[0] * s, joints[c].pixel[1] * s],
             [joints[p].pixel[0] * s, joints[p].pixel[1] * s], sideColour(joints[c].name),
             line * 1.5, seen(joints[c]) && seen(joints[p]));
      }
      for (const j of joints) {
        const selected = i === 0 && j.name === state.joint;
        if (!seen(j) && !selected) {
          ring(ctx, j.pixel[0] * s, j.pixel[1] * s, line * 1.8);
          continue;
        }
        dot(ctx, j.pixel[0] * s, j.pixel[1] * s, selected ? line * 3 : line * 1.8,
            selected ? MARKER : sideColour(j.name));
      }
    });
  }
  const box = state.drag ? dragBox() : state.box;
  if (box) {
    ctx.strokeStyle = CENTRE;
    ctx.lineWidth = 2;
    ctx.strokeRect(box.x * s, box.y * s, box.w * s, box.h * s);
  }
}

function dragBox() {
  const [x0, y0] = state.drag.start, [x1, y1] = state.drag.end;
  return { x: Math.min(x0, x1), y: Math.min(y0, y1), w: Math.abs(x1 - x0), h: Math.abs(y1 - y0) };
}

// A joint the model says is out of view (models with a visibility head): drawn apart, as a
// hollow grey ring, and the bones that reach it as thin dashed grey lines.
const UNSEEN = "#969696";
function seen(joint) {
  return joint.visibility === null || joint.visibility === undefined || joint.visibility >= 0.5;
}

function bone(ctx, a, b, colour, width, visible) {
  ctx.strokeStyle = visible ? colour : UNSEEN;
  ctx.lineWidth = visible ? width : 1;
  ctx.setLineDash(visible ? [] : [4, 4]);
  ctx.beginPath();
  ctx.moveTo(a[0], a[1]);
  ctx.lineTo(b[0], b[1]);
  ctx.stroke();
  ctx.setLineDash([]);
}

function ring(ctx, x, y, r) {
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.strokeStyle = UNSEEN;
  ctx.lineWidth = 1.5;
  ctx.stroke();
}

function dot(ctx, x, y, r, colour) {
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fillStyle = colour;
  ctx.fill();
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 1;
  ctx.stroke();
}

// ---- drawing: 3D view -----------------------------------------------------------------------

// Rotation from camera mm (X right, Y down, Z forward) to screen (u right, v down, depth away),
// the same as view_matrix in service/render.py.
function viewMatrix(azimuthDeg, elevationDeg) {
  const a = azimuthDeg * Math.PI / 180, e = elevationDeg * Math.PI / 180;
  return [
    [Math.cos(a), 0, -Math.sin(a)],
    [-Math.sin(a) * Math.sin(e), Math.cos(e), -Math.cos(a) * Math.sin(e)],
    [Math.sin(a) * Math.cos(e), Math.sin(e), Math.cos(a) * Math.cos(e)],
  ];
}

const apply = (r, p) => r.map((row) => row[0] * p[0] + row[1] * p[1] + row[2] * p[2]);

function drawView() {
  const canvas = $("view3d"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.fillStyle = "#141417";
  ctx.fillRect(0, 0, W, H);
  const r = viewMatrix(state.view.azimuth, state.view.elevation);
  const persons = state.result ? state.result.persons : [];
  const n = persons.length;
  const skeletons = persons.map((p, i) =>
    p.joints.map((j) => [j.relative_mm[0] + (i - (n - 1) / 2) * 1000, j.relative_mm[1],
                         j.relative_mm[2]]));
  const all = skeletons.flat();
  const floor = all.length ? Math.max(...all.map((p) => p[1])) : 900;
  // A fixed scale for a steady picture while rotating: 2.4 m fits the panel's height.
  const scale = Math.min(W, H) / 2400;
  const centreY = all.length ? (Math.min(...all.map((p) => p[1])) + floor) / 2 : 0;
  const project = (p) => {
    const q = apply(r, [p[0], p[1] - centreY, p[2]]);
    return [W / 2 + q[0] * scale, H / 2 + q[1] * scale, q[2]];
  };
  // Floor grid, 250 mm squares.
  ctx.strokeStyle = "#40404a";
  ctx.lineWidth = 1;
  const half = 1000 + (n > 1 ? (n - 1) * 500 : 0);
  const segment = (a, b) => {
    const pa = project(a), pb = project(b);
    ctx.beginPath();
    ctx.moveTo(pa[0], pa[1]);
    ctx.lineTo(pb[0], pb[1]);
    ctx.stroke();
  };
  for (let x = -half; x <= half; x += 250) segment([x, floor, -1000], [x, floor, 1000]);
  for (let z = -1000; z <= 1000; z += 250) segment([-half, floor, z], [half, floor, z]);
  // Camera axes at the bottom right.
  const origin = [W - 44, H - 40];
  ctx.font = "11px system-ui, sans-serif";
  ["X", "Y", "Z"].forEach((name, i) => {
    const axis = [0, 0, 0];
    axis[i] = 1;
    const d = apply(r, axis);
    ctx.strokeStyle = ctx.fillStyle = "#96969f";
    ctx.beginPath();
    ctx.moveTo(origin[0], origin[1]);
    ctx.lineTo(origin[0] + d[0] * 22, origin[1] + d[1] * 22);
    ctx.stroke();
    ctx.fillText(name, origin[0] + d[0] * 30 - 3, origin[1] + d[1] * 30 + 4);
  });
  ctx.fillStyle = "#9a9aa6";
  ctx.fillText(`azimuth ${Math.round(state.view.azimuth)}°, elevation ` +
               `${Math.round(state.view.elevation)}°`, 10, 18);
  if (!n) {
    ctx.fillText(state.file ? "no person" : "no pose yet", W / 2 - 30, H / 2);
    return;
  }
  const b = bones();
  const projected = skeletons.map((skel) => skel.map(project));
  // Uncertainty first (1-sigma spheres, seen as discs), so that bones and joints stay crisp.
  projected.forEach((px, i) => persons[i].joints.forEach((joint, j) => {
    const radius = Math.hypot(...joint.uncertainty_mm) / Math.sqrt(3) * scale;
    ctx.beginPath();
    ctx.arc(px[j][0], px[j][1], Math.max(radius, 2), 0, 2 * Math.PI);
    ctx.fillStyle = "rgba(255,255,255,0.05)";
    ctx.fill();
    ctx.strokeStyle = "rgba(255,255,255,0.12)";
    ctx.lineWidth = 1;
    ctx.stroke();
  }));
  projected.forEach((px, i) => {
    const colour = PERSON_COLOURS[i % PERSON_COLOURS.length];
    const joints = persons[i].joints;
    // Painter's order: the farthest first.
    const order = [...b].sort((u, v) => (px[v[0]][2] + px[v[1]][2]) - (px[u[0]][2] + px[u[1]][2]));
    ctx.lineCap = "round";
    for (const [c, p] of order) {
      bone(ctx, px[c], px[p], sideColour(joints[c].name), 3, seen(joints[c]) && seen(joints[p]));
    }
    const jointOrder = px.map((_, j) => j).sort((u, v) => px[v][2] - px[u][2]);
    for (const j of jointOrder) {
      const name = joints[j].name;
      const selected = i === 0 && name === state.joint;
      if (!seen(joints[j]) && !selected) {
        ring(ctx, px[j][0], px[j][1], 4);
        continue;
      }
      dot(ctx, px[j][0], px[j][1], selected ? 6 : 4,
          selected ? MARKER : name === "head_top" ? HEAD_TOP : sideColour(name));
    }
    ctx.fillStyle = colour;
    ctx.fillText(`#${i}`, px[0][0] + 8, px[0][1] - 6);
  });
}

function setupViewDrag() {
  const canvas = $("view3d");
  let last = null;
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    canvas.classList.add("dragging");
    last = [event.clientX, event.clientY];
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    state.view.azimuth = (state.view.azimuth - (event.clientX - last[0]) * 0.5) % 360;
    state.view.elevation = Math.max(-89, Math.min(89,
      state.view.elevation + (event.clientY - last[1]) * 0.5));
    last = [event.clientX, event.clientY];
    drawView();
  });
  const stop = () => { last = null; canvas.classList.remove("dragging"); };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("reset-view").addEventListener("click", () => { state.view = { ...VIEW }; drawView(); });
}

// ---- heatmaps -------------------------------------------------------------------------------

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

// {format: "f16", shape, data: base64 little-endian float16} -> {shape, values: Float32Array}
function decodeHeatmaps(h) {
  const bytes = Uint8Array.from(atob(h.data), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const values = new Float32Array(bytes.length / 2);
  for (let i = 0; i < values.length; i++) values[i] = halfToFloat(view.getUint16(2 * i, true));
  return { shape: h.shape, values };
}

function inferno(t) {
  const x = Math.min(1, Math.max(0, t)) * (INFERNO.length - 1);
  const i = Math.min(INFERNO.length - 2, Math.floor(x)), f = x - i;
  return INFERNO[i].map((c, k) => Math.round(c + (INFERNO[i + 1][k] - c) * f));
}

function drawHeatmaps() {
  const hm = state.heatmaps;
  const person = state.result && state.result.persons[0];
  for (const [p, plane] of PLANES.entries()) {
    const canvas = $("map-" + plane), ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    if (!hm || !person || !state.model) continue;
    const [, joints, rows, cols] = hm.shape;
    const j = state.model.joints.indexOf(state.joint);
    const offset = (p * joints + j) * rows * cols;
    const map = hm.values.subarray(offset, offset + rows * cols);
    let peak = 0;
    for (const v of map) peak = Math.max(peak, v);
    const image = ctx.createImageData(cols, rows);
    map.forEach((v, i) => {
      const [r, g, b] = inferno(peak > 0 ? v / peak : 0);
      image.data.set([r, g, b, 255], 4 * i);
    });
    const tile = document.createElement("canvas");
    tile.width = cols;
    tile.height = rows;
    tile.getContext("2d").putImageData(image, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(tile, 0, 0, canvas.width, canvas.height);
    // The prediction: normalised -1 and +1 are the map's outer edges.
    const nrm = person.joints[j].normalised;
    const [ci, ri] = PLANE_AXES[plane];
    const u = (nrm[ci] + 1) / 2 * canvas.width, v = (nrm[ri] + 1) / 2 * canvas.height;
    ctx.strokeStyle = MARKER;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(u - 9, v); ctx.lineTo(u + 9, v);
    ctx.moveTo(u, v - 9); ctx.lineTo(u, v + 9);
    ctx.stroke();
  }
}

// ---- joint table and JSON -------------------------------------------------------------------

function fillTable() {
  const body = $("joints").querySelector("tbody");
  body.innerHTML = "";
  const person = state.result && state.result.persons[0];
  if (!person) return;
  const sizes = person.joints.map((j) => Math.hypot(...j.uncertainty_mm));
  const largest = Math.max(...sizes, 1e-9);
  person.joints.forEach((j, i) => {
    const row = document.createElement("tr");
    row.dataset.joint = j.name;
    if (j.name === state.joint) row.classList.add("selected");
    if (!seen(j)) row.classList.add("unseen");
    const f = (v) => String(Math.round(v) + 0);  // + 0: no "-0"
    const cells = [
      `<span class="dot" style="background:${sideColour(j.name)}"></span>${j.name}`,
      `${f(j.pixel[0])}, ${f(j.pixel[1])}`,
      f(j.camera_mm[0]), f(j.camera_mm[1]), f(j.camera_mm[2]),
      j.uncertainty_mm.map(f).join(", "),
      `<div class="bar" title="${sizes[i].toFixed(0)} mm"><span style="width:` +
        `${(100 * sizes[i] / largest).toFixed(1)}%"></span></div>`,
      // The model's in-view probability; "n/a" from a model without a visibility head.
      j.visibility === null || j.visibility === undefined ? "n/a"
        : `${Math.round(100 * j.visibility)} %`,
    ];
    row.innerHTML = cells.map((c) => `<td>${c}</td>`).join("");
    row.addEventListener("click", () => selectJoint(j.name));
    body.append(row);
  });
}

function showJson() {
  // Heatmap data is long base64: shortened here, complete in the response.
  const text = JSON.stringify(state.result, (key, value) =>
    key === "data" && typeof value === "string" && value.length > 80
      ? `${value.slice(0, 60)}… (${value.length} base64 characters)` : value, 2);
  $("json").textContent = text;
}

function selectJoint(name) {
  state.joint = name;
  $("joint").value = name;
  renderAll();
}

function renderAll() {
  drawOverlay();
  drawView();
  drawHeatmaps();
  fillTable();
  if (state.result) showJson();
}

// ---- wiring ---------------------------------------------------------------------------------

function setup() {
  $("file").addEventListener("change", (event) => loadFile(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    loadFile(event.dataTransfer.files[0]);
  });
  $("run").addEventListener("click", predict);
  $("clear-box").addEventListener("click", () => {
    state.box = null;
    $("clear-box").disabled = true;
    predict();
  });
  $("joint").addEventListener("change", (event) => selectJoint(event.target.value));
  $("token").addEventListener("change", loadModel);
  setupBoxDrawing();
  setupViewDrag();
  drawView();
  drawHeatmaps();
  loadModel().catch((err) => { $("model").textContent = "model: " + err.message; });
}

setup();
