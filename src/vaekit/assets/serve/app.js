// vaekit serve: the page. It uses only the HTTP API (/api/...), and loads nothing from outside.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { task: "denoise", source: null, info: null, view: { s: 1, x: 0, y: 0 }, results: [], fills: [], fill: 0, abort: null, undo: [], running: false };

// ------------------------------------------------------------------ loading
async function init() {
  state.info = await (await fetch("/api/info")).json();
  for (const name of state.info.samples) $("sample").append(new Option(name, name));
  showClassical();
}

async function setSource(blob, label) {
  state.source = blob;
  const url = URL.createObjectURL(blob);
  await new Promise((ok, bad) => { $("before").onload = ok; $("before").onerror = bad; $("before").src = url; });
  const img = $("before");
  for (const c of [$("mask")]) { c.width = img.naturalWidth; c.height = img.naturalHeight; }
  $("after").removeAttribute("src"); split();
  state.results = []; state.undo = []; $("cards").replaceChildren();
  $("source").textContent = `${label}: ${img.naturalWidth}×${img.naturalHeight}`;
  $("run").disabled = false;
  $("figures").textContent = "Choose a task and press Run.";
  $("download").hidden = $("download-vkc").hidden = $("flip").hidden = true;
  fit();
}

async function loadFile(file) {
  if (!file) return;
  if (file.name.toLowerCase().endsWith(".vkc")) {
    const form = new FormData(); form.append("image", file);
    const r = await call("/api/decompress", form);
    if (r) await setSource(await (await fetch(r.image)).blob(), `${file.name} (decoded)`);
    return;
  }
  try { await setSource(file, file.name); } catch { say(`${file.name} is not an image this browser can show (try PNG or JPEG).`, true); }
}

$("file").onchange = (e) => loadFile(e.target.files[0]);
$("sample").onchange = async (e) => { if (e.target.value) await setSource(await (await fetch(`/api/samples/${e.target.value}`)).blob(), e.target.value); };
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); loadFile(e.dataTransfer.files[0]); });

// ------------------------------------------------------------------ tasks and controls
for (const b of document.querySelectorAll("#tabs button")) {
  b.onclick = () => {
    state.task = b.dataset.task;
    for (const x of document.querySelectorAll("#tabs button")) x.classList.toggle("active", x === b);
    for (const d of document.querySelectorAll("#controls [data-for]")) d.hidden = d.dataset.for !== state.task;
    $("mask").hidden = state.task !== "inpaint";
    showClassical();
  };
}
$("sigma").oninput = () => { $("sigma-out").value = $("sigma").value; };
$("strength").oninput = () => { $("strength-out").value = `${$("strength").value}%`; };
$("quality").oninput = () => { $("quality-out").value = $("quality").value; };

function showClassical() {
  const box = $("classical"); box.replaceChildren();
  const methods = (state.info?.methods[state.task] || []).filter((m) => m !== "vae");
  if (!methods.length) return;
  box.append("side by side: ");
  for (const m of methods) {
    const l = document.createElement("label");
    l.innerHTML = `<input type="checkbox" value="${m}" ${["bm3d", "telea", "gray-world"].includes(m) ? "checked" : ""}> ${m} `;
    box.append(l);
  }
}

function say(text, error = false) { $("figures").textContent = text; $("figures").classList.toggle("error", error); }

async function call(url, form) {
  state.abort = new AbortController();
  const t0 = performance.now();
  $("cancel").hidden = false; $("run").disabled = true;
  const tick = setInterval(() => { $("progress").textContent = `working… ${((performance.now() - t0) / 1000).toFixed(0)} s`; }, 250);
  try {
    const r = await fetch(`${url}?format=json`, { method: "POST", body: form, signal: state.abort.signal });
    const body = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
    if (!r.ok) { say(`${r.status}: ${body.detail}`, true); return null; }
    return body;
  } catch (e) {
    say(e.name === "AbortError" ? "Cancelled." : `No answer from the server: ${e.message}`, e.name !== "AbortError");
    return null;
  } finally {
    clearInterval(tick); $("progress").textContent = ""; $("cancel").hidden = true; $("run").disabled = !state.source || state.running;
  }
}
$("cancel").onclick = () => state.abort?.abort();

function maskBlob() {
  const m = $("mask"), out = document.createElement("canvas");
  out.width = m.width; out.height = m.height;
  const g = out.getContext("2d");
  g.fillStyle = "#000"; g.fillRect(0, 0, out.width, out.height); g.drawImage(m, 0, 0);
  return new Promise((ok) => out.toBlob(ok, "image/png"));
}

async function formFor(method) {
  const f = new FormData();
  f.append("image", state.source, "image.png");
  if (state.task === "denoise") {
    f.append("method", method);
    if (!$("blind").checked) f.append("sigma", $("sigma").value);
    if ($("add-noise").checked) f.append("add_sigma", $("add-sigma").value);
    f.append("strength", String($("strength").value / 100));
  } else if (state.task === "inpaint") {
    f.append("method", method);
    f.append("samples", method === "vae" ? $("fills").value : "1");
    if ($("detect").checked && !state.undo.length) f.append("detect", "scratches");
    else f.append("mask", await maskBlob(), "mask.png");
  } else if (state.task === "compress") {
    f.append("quality", $("quality").value);
    f.append("effort", $("effort").value);
    f.append("compare", $("compare").checked ? "true" : "false");
  } else {
    f.append("method", method);
  }
  return f;
}

$("run").onclick = async () => {
  if (!state.source || state.running) return;
  state.running = true;  // Run stays disabled from the first method's call to the last one's answer
  try {
    state.results = []; $("cards").replaceChildren();
    const picked = [...document.querySelectorAll("#classical input:checked")].map((i) => i.value);
    const methods = state.task === "compress" ? ["vae"] : ["vae", ...picked];
    for (const method of methods) {
      const r = await call(`/api/${state.task}`, await formFor(method));
      if (!r) return;
      if (r.noisy && !state.results.length) addCard("noisy input", r.noisy, {});
      if (r.mask && $("detect").checked && !state.undo.length) await loadMask(r.mask);
      const label = state.task === "compress" ? "vaekit .vkc" : method === "vae" ? "vaekit VAE" : method;
      addCard(label, r.image, r.figures, r);
      for (const c of r.figures.classical || []) addCard(`${c.codec} q${c.quality}`, c.image, { bytes: c.bytes, bpp: c.bpp, psnr: c.psnr });
      if (method === "vae") showResult(state.results.length - 1);
    }
  } finally {
    state.running = false; $("run").disabled = !state.source;
  }
};

// ------------------------------------------------------------------ results
function addCard(label, url, figures, raw = {}) {
  const fills = Object.keys(raw).filter((k) => k.startsWith("sample_")).sort().map((k) => raw[k]);
  state.results.push({ label, url, figures, fills, vkc: raw.vkc });
  const i = state.results.length - 1;
  const card = document.createElement("div");
  card.className = "card";
  card.innerHTML = `<div class="viewport"><div class="stage"><img alt="${label}"></div></div><p><b>${label}</b> ${summary(figures)}</p>`;
  card.querySelector("img").src = url;
  card.onclick = () => showResult(i);
  $("cards").append(card);
  applyView();
}

function summary(f) {
  const parts = [];
  if (f.psnr != null) parts.push(`${f.psnr.toFixed(2)} dB`);
  if (f.bpp != null) parts.push(`${f.bpp} bpp`);
  if (f.bytes != null) parts.push(`${f.bytes} B`);
  if (f.sigma != null) parts.push(`σ ${f.sigma.toFixed(1)}${f.sigma_estimated ? " (est.)" : ""}`);
  if (f.path === "shuffled") parts.push("correlated noise: pixel-shuffled passes");
  if (f.changed === false) parts.push("left unchanged");
  else if (f.gain != null) parts.push(`gain ${f.gain.toFixed(2)}, γ ${f.gamma.toFixed(2)}`);
  if (f.p_change != null) parts.push(`P(change) ${f.p_change.toFixed(2)}`);
  if (f.seconds != null) parts.push(`${f.seconds.toFixed(1)} s`);
  return parts.join(" · ");
}

function showResult(i) {
  const r = state.results[i];
  state.fills = r.fills.length > 1 ? r.fills : []; state.fill = 0;
  $("after").src = r.url;
  [...$("cards").children].forEach((c, j) => c.classList.toggle("active", j === i));
  const rows = Object.entries(r.figures).filter(([k, v]) => k !== "classical" && v !== null && typeof v !== "object" || Array.isArray(v) && k !== "classical");
  $("figures").innerHTML = `<b>${r.label}</b><table>${rows.map(([k, v]) => `<tr><td>${k}</td><td>${Array.isArray(v) ? v.map((x) => x.toFixed(3)).join(" / ") : typeof v === "number" ? +v.toFixed(4) : v}</td></tr>`).join("")}</table>`;
  $("figures").classList.remove("error");
  $("download").href = r.url; $("download").hidden = false;
  $("download-vkc").hidden = !r.vkc; if (r.vkc) $("download-vkc").href = r.vkc;
  $("flip").hidden = !state.fills.length; flipLabel();
  split();
}

function flipLabel() { $("flip-n").textContent = state.fills.length ? `fill ${state.fill + 1} of ${state.fills.length}` : ""; }
function flip(d) {
  if (!state.fills.length) return;
  state.fill = (state.fill + d + state.fills.length) % state.fills.length;
  $("after").src = state.fills[state.fill]; $("download").href = state.fills[state.fill]; flipLabel();
}
$("prev").onclick = () => flip(-1);
$("next").onclick = () => flip(1);

// ------------------------------------------------------------------ compare: split, synchronized zoom and pan
function split() {  // before (and the mask being painted) on the left of the handle, the result on the right
  const v = +$("split").value;
  $("after").style.clipPath = `inset(0 0 0 ${v}%)`;
  $("mask").style.clipPath = $("after").getAttribute("src") ? `inset(0 ${100 - v}% 0 0)` : "none";
}
$("split").oninput = split;

function fit() {
  const img = $("before"), vp = $("viewer");
  if (!img.naturalWidth) return;
  const s = Math.min(vp.clientWidth / img.naturalWidth, vp.clientHeight / img.naturalHeight);
  state.view = { s, x: (vp.clientWidth - s * img.naturalWidth) / 2, y: (vp.clientHeight - s * img.naturalHeight) / 2 };
  applyView();
}

function applyView() {
  const { s, x, y } = state.view;
  const main = $("viewer");
  for (const stage of document.querySelectorAll(".stage")) {
    const vp = stage.parentElement;  // cards are smaller: the same view, scaled to their width
    const k = vp === main ? 1 : vp.clientWidth / main.clientWidth;
    stage.style.transform = `translate(${x * k}px, ${y * k}px) scale(${s * k})`;
  }
}

$("viewer").addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = $("viewer").getBoundingClientRect(), px = e.clientX - r.left, py = e.clientY - r.top;
  const f = Math.exp(-e.deltaY * 0.0015), v = state.view;
  state.view = { s: v.s * f, x: px - (px - v.x) * f, y: py - (py - v.y) * f };
  applyView();
}, { passive: false });

let drag = null;
$("viewer").addEventListener("pointerdown", (e) => {
  if (e.target === $("split")) return;
  const painting = state.task === "inpaint" && !e.shiftKey && e.button === 0 && state.source;
  drag = { painting, x: e.clientX, y: e.clientY, v: { ...state.view } };
  $("viewer").setPointerCapture(e.pointerId);
  if (painting) { state.undo.push($("mask").getContext("2d").getImageData(0, 0, $("mask").width, $("mask").height)); paint(e, null); }
});
$("viewer").addEventListener("pointermove", (e) => {
  if (!drag) return;
  if (drag.painting) { paint(e, drag.last); drag.last = toImage(e); return; }
  state.view = { ...drag.v, x: drag.v.x + e.clientX - drag.x, y: drag.v.y + e.clientY - drag.y };
  applyView();
});
$("viewer").addEventListener("pointerup", () => { drag = null; });

function toImage(e) {
  const r = $("viewer").getBoundingClientRect(), v = state.view;
  return { x: (e.clientX - r.left - v.x) / v.s, y: (e.clientY - r.top - v.y) / v.s };
}

function paint(e, last) {
  const g = $("mask").getContext("2d"), p = toImage(e), from = last || p;
  g.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  g.strokeStyle = "#fff"; g.lineCap = "round"; g.lineWidth = +$("brush").value;
  g.beginPath(); g.moveTo(from.x, from.y); g.lineTo(p.x + 0.01, p.y); g.stroke();
  if (!last) drag.last = p;
}

async function loadMask(url) {
  const img = new Image();
  await new Promise((ok) => { img.onload = ok; img.src = url; });
  const g = $("mask").getContext("2d"), c = document.createElement("canvas");
  c.width = img.width; c.height = img.height;
  const h = c.getContext("2d"); h.drawImage(img, 0, 0);
  const d = h.getImageData(0, 0, c.width, c.height);
  for (let i = 0; i < d.data.length; i += 4) d.data[i + 3] = d.data[i];  // white = missing, black = transparent
  state.undo.push(g.getImageData(0, 0, c.width, c.height));
  g.putImageData(d, 0, 0);
}

$("undo").onclick = () => { const d = state.undo.pop(); if (d) $("mask").getContext("2d").putImageData(d, 0, 0); };
$("clear").onclick = () => {
  const m = $("mask"); state.undo.push(m.getContext("2d").getImageData(0, 0, m.width, m.height));
  m.getContext("2d").clearRect(0, 0, m.width, m.height);
};
window.addEventListener("resize", fit);
$("mask").hidden = true;
init();
