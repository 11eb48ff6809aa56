// rsam serve's page: plain JS against the /v1 API (docs/serve.md). The image
// is encoded once on upload; every click is one cheap decode request.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  id: null, width: 0, height: 0, scale: 1, bitmap: null,
  points: [], labels: [], box: null,   // image pixels
  result: null, chosen: 0,             // last segment answer, chosen candidate
  mask: null,                          // Uint8Array h*w, row-major, of the shown mask
  everything: null, busy: false, error: null,
  // One segment request in flight at most: clicks made meanwhile only
  // change the prompt, and the latest prompt goes out when the answer is in.
  inFlight: false, pending: false, sent: 0, shownPrompt: null,
  token: sessionStorage.getItem("rsam-token") || "",
  health: null,
};
window.rsamState = state;  // for the browser test and for curious users

// The model variant the toggles ask for (false for what the server lacks).
function variant() {
  const h = state.health || {};
  return { adapter: !!h.adapter && $("adapter").checked, enhancer: !!h.enhancer && $("enhancer").checked };
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  return h;
}

async function api(method, path, body, contentType) {
  const opts = { method, headers: headers(contentType ? { "Content-Type": contentType } : {}) };
  if (body !== undefined) opts.body = body;
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: "HTTP " + res.status }; }
  if (res.status === 401) $("token-box").hidden = false;
  if (!res.ok) { const err = new Error(data.error || ("HTTP " + res.status)); err.status = res.status; throw err; }
  return data;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  state.error = isError ? text : null;
}

function setBusy(on, text) {
  state.busy = on;
  $("busy").hidden = !on;
  if (text) $("busy-text").textContent = text;
  document.body.dataset.state = on ? "busy" : (state.mask || state.everything ? "mask" : (state.id ? "ready" : "empty"));
}

function showTimings(t) {
  const rows = Object.entries(t || {}).map(([k, v]) => `<tr><td>${k}</td><td>${v.toFixed(1)} ms</td></tr>`);
  $("timings").innerHTML = rows.join("");
}

// COCO compressed RLE (pycocotools' rleFrString) to a row-major 0/1 mask.
function decodeRle(rle) {
  const [h, w] = rle.size, s = rle.counts, counts = [];
  for (let p = 0; p < s.length;) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20; p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  const mask = new Uint8Array(h * w);
  let i = 0, v = 0;
  for (const n of counts) {
    if (v) for (let j = i; j < i + n; j++) mask[(j % h) * w + Math.floor(j / h)] = 1;
    i += n; v = 1 - v;
  }
  return mask;
}

function drawOverlay() {
  const c = $("overlay"), ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const layers = [];
  if (state.everything) {
    state.everything.forEach((m, k) => layers.push([m, hsl(k)]));
  } else if (state.mask) {
    layers.push([state.mask, [30, 144, 255]]);
  }
  if (layers.length) {
    const off = document.createElement("canvas");
    off.width = state.width; off.height = state.height;
    const octx = off.getContext("2d"), img = octx.createImageData(state.width, state.height), d = img.data;
    for (const [m, rgb] of layers)
      for (let i = 0; i < m.length; i++)
        if (m[i]) { d[4 * i] = rgb[0]; d[4 * i + 1] = rgb[1]; d[4 * i + 2] = rgb[2]; d[4 * i + 3] = 140; }
    octx.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, c.width, c.height);
  }
  // Prompts on top.
  const s = state.scale;
  state.points.forEach(([x, y], i) => {
    ctx.beginPath(); ctx.arc(x * s, y * s, 6, 0, 2 * Math.PI);
    ctx.fillStyle = state.labels[i] ? "#2e7d32" : "#c62828"; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
  });
  if (state.box) {
    const [x0, y0, x1, y1] = state.box;
    ctx.lineWidth = 2; ctx.strokeStyle = "#ffeb3b";
    ctx.strokeRect(x0 * s, y0 * s, (x1 - x0) * s, (y1 - y0) * s);
  }
}

// Distinct colours for "segment everything": golden-angle hues.
function hsl(k) {
  const h = ((k * 137.508) % 360) / 60, c = 200, x = c * (1 - Math.abs((h % 2) - 1));
  const rgb = h < 1 ? [c, x, 0] : h < 2 ? [x, c, 0] : h < 3 ? [0, c, x] : h < 4 ? [0, x, c] : h < 5 ? [x, 0, c] : [c, 0, x];
  return rgb.map((v) => Math.round(v + 40));
}

function variantText(r) {
  return " (" + (r.adapter ? "adapter" : "plain") + (r.enhancer ? " + enhancer" : "") + ")";
}

function chooseCandidate(i) {
  const r = state.result;
  state.chosen = i;
  state.mask = decodeRle(r.masks[i].rle);
  const m = r.masks[i];
  setStatus(`mask ${i + 1}/${r.masks.length}: score ${m.score.toFixed(3)}, stability ${m.stability.toFixed(3)}, ` +
            `${m.area} px` + variantText(r));
  document.querySelectorAll("#candidate-buttons button").forEach((b, k) => b.classList.toggle("active", k === i));
  drawOverlay();
  setBusy(false);
}

async function segment() {
  if (state.inFlight) { state.pending = true; return; }
  state.inFlight = true;
  try {
    do { state.pending = false; await segmentOnce(); } while (state.pending && state.id);
  } finally { state.inFlight = false; }
}

async function segmentOnce() {
  if (!state.id) return;
  state.everything = null;
  if (!state.points.length && !state.box) {
    state.result = null; state.mask = null; $("candidates").hidden = true;
    drawOverlay(); updateButtons(); setStatus("Click on an object."); return;
  }
  const lone = state.points.length === 1 && !state.box;
  const body = Object.assign({ points: state.points, labels: state.labels, box: state.box, multimask: lone,
                               format: "rle" }, variant());
  const sent = JSON.stringify(body);
  state.sent++;
  try {
    const r = await api("POST", `/v1/images/${state.id}/segment`, sent, "application/json");
    if (state.pending) return;  // the prompt changed meanwhile: its answer comes next
    state.result = r;
    const shown = JSON.parse(sent);  // what was asked, not the prompt as it is now
    state.shownPrompt = { points: shown.points, labels: shown.labels, box: shown.box };
    $("candidates").hidden = !lone;
    $("candidate-buttons").innerHTML = "";
    if (lone) r.masks.forEach((m, i) => {
      const b = document.createElement("button");
      b.textContent = `${i + 1}: ${m.score.toFixed(2)}`;
      b.onclick = () => chooseCandidate(i);
      $("candidate-buttons").appendChild(b);
    });
    showTimings(r.timings_ms);
    chooseCandidate(r.best);
  } catch (e) {
    if (e.status === 404) state.id = null;
    setStatus(e.message, true);
  }
  updateButtons();
}

async function everything() {
  if (!state.id) return;
  setBusy(true, "Segmenting everything…");
  try {
    const r = await api("POST", `/v1/images/${state.id}/everything`,
                        JSON.stringify(variant()), "application/json");
    state.points = []; state.labels = []; state.box = null; state.mask = null; state.result = null;
    state.lastEverything = r.masks;
    state.everything = r.masks.map((m) => decodeRle(m.rle));
    $("candidates").hidden = true;
    showTimings(r.timings_ms);
    setStatus(`segment everything: ${r.masks.length} masks from ${r.points} points` + variantText(r));
    drawOverlay();
  } catch (e) { setStatus(e.message, true); }
  setBusy(false);
  updateButtons();
}

async function upload(file) {
  setBusy(true, "Encoding image…");
  setStatus("Uploading " + file.name + " …");
  try {
    const bytes = await file.arrayBuffer();
    const v = variant(), q = `?adapter=${v.adapter}&enhancer=${v.enhancer}`;
    const r = await api("POST", "/v1/images" + q, bytes, "application/octet-stream");
    const bitmap = await createImageBitmap(new Blob([bytes]));
    Object.assign(state, { id: r.id, width: r.width, height: r.height, bitmap, points: [], labels: [], box: null,
                           result: null, mask: null, everything: null });
    layout();
    showTimings({ encode: r.encode_ms });
    setStatus(`${file.name}: ${r.width}x${r.height}, ` + (r.cached ? "already encoded" : `encoded in ${r.encode_ms.toFixed(0)} ms`) +
              ". Click on an object.");
  } catch (e) { setStatus(e.message, true); }
  setBusy(false);
  updateButtons();
}

function layout() {
  const maxW = Math.max(320, window.innerWidth - 380), maxH = Math.max(240, window.innerHeight - 110);
  state.scale = Math.min(1, maxW / state.width, maxH / state.height);
  const w = Math.round(state.width * state.scale), h = Math.round(state.height * state.scale);
  for (const id of ["image", "overlay"]) { $(id).width = w; $(id).height = h; $(id).hidden = false; }
  $("drop").hidden = true;
  $("image").getContext("2d").drawImage(state.bitmap, 0, 0, w, h);
  drawOverlay();
}

function updateButtons() {
  const has = !!state.id;
  $("clear").disabled = !has;
  $("everything").disabled = !has;
  $("download-png").disabled = !state.mask;
  $("download-json").disabled = !state.result && !state.everything;
}

function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function downloadPng() {
  const c = document.createElement("canvas");
  c.width = state.width; c.height = state.height;
  const ctx = c.getContext("2d"), img = ctx.createImageData(c.width, c.height);
  for (let i = 0; i < state.mask.length; i++) {
    const v = state.mask[i] ? 255 : 0;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  c.toBlob((b) => download(`mask-${state.id.slice(0, 8)}.png`, b), "image/png");
}

function downloadJson() {
  const masks = state.everything ? state.lastEverything : [state.result.masks[state.chosen]];
  const anns = (masks || []).map((m, i) => ({ id: i + 1, image_id: 1, category_id: 1, segmentation: m.rle,
                                              area: m.area, score: m.score, iscrowd: 0 }));
  const coco = { images: [{ id: 1, width: state.width, height: state.height, rsam_id: state.id }],
                 annotations: anns, categories: [{ id: 1, name: "object" }] };
  download(`masks-${state.id.slice(0, 8)}.json`, new Blob([JSON.stringify(coco)], { type: "application/json" }));
}

// Mouse: a click is a point (shift or right button: negative), a drag a box.
let down = null;
function toImage(ev) {
  const r = $("overlay").getBoundingClientRect();
  const x = (ev.clientX - r.left) / state.scale, y = (ev.clientY - r.top) / state.scale;
  return [Math.min(state.width - 1, Math.max(0, x)), Math.min(state.height - 1, Math.max(0, y))];
}
$("overlay").addEventListener("contextmenu", (ev) => ev.preventDefault());
$("overlay").addEventListener("mousedown", (ev) => { if (!state.busy && state.id) down = { at: toImage(ev), ev }; });
$("overlay").addEventListener("mouseup", (ev) => {
  if (!down) return;
  const a = down.at, b = toImage(ev), moved = Math.hypot(b[0] - a[0], b[1] - a[1]) * state.scale;
  const negative = ev.shiftKey || ev.button === 2;
  down = null;
  if (moved > 6) {
    state.box = [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  } else {
    state.points.push(b); state.labels.push(negative ? 0 : 1);
  }
  drawOverlay();
  segment();
});

$("file").addEventListener("change", () => { if ($("file").files[0]) upload($("file").files[0]); });
const stage = $("stage");
stage.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("over"); });
stage.addEventListener("dragleave", () => stage.classList.remove("over"));
stage.addEventListener("drop", (ev) => {
  ev.preventDefault(); stage.classList.remove("over");
  if (ev.dataTransfer.files[0]) upload(ev.dataTransfer.files[0]);
});
for (const id of ["adapter", "enhancer"]) $(id).addEventListener("change", async () => {
  // The other variant needs its own embedding: the first decode encodes it.
  if (state.id && (state.points.length || state.box)) {
    setBusy(true, "Encoding for the other model…"); await segment(); setBusy(false);
  }
});
$("clear").onclick = () => { state.points = []; state.labels = []; state.box = null; segment(); };
$("everything").onclick = everything;
$("download-png").onclick = downloadPng;
$("download-json").onclick = downloadJson;
$("token-set").onclick = () => { state.token = $("token").value; sessionStorage.setItem("rsam-token", state.token); loadHealth(); };
window.addEventListener("resize", () => { if (state.id) layout(); });

async function loadHealth() {
  try {
    const h = await api("GET", "/v1/health");
    state.health = h;
    $("token-box").hidden = !state.token;
    $("adapter").disabled = !h.adapter;
    $("adapter").checked = !!h.adapter;
    $("enhancer").disabled = !h.enhancer;
    $("enhancer").checked = !!h.enhancer;
    $("server").textContent = `model ${h.model}` + (h.adapter ? `, adapter ${h.adapter}` : ", no adapter") +
                              (h.enhancer ? `, enhancer ${h.enhancer}` : "") +
                              `; ${h.images} image(s) cached`;
    if (!state.id) setStatus("No image.");
  } catch (e) { setStatus(e.message, true); }
}
loadHealth();
updateButtons();
