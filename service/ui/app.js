// mltag's browser page: plain JS, no dependencies, served by the service itself (GET /).
// It asks /labels for the model, sends each image to POST /tag once (min_score=0, so every
// label comes back with its score and, when the model has heatmaps, its heatmap) and
// filters the tags in the page with per-label thresholds: moving a slider sends nothing.
"use strict";

const KEY_STORE = "mltag.apiKey";
const state = { model: null, labels: [], calibrated: {}, thresholds: {}, images: [] };
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function setStatus(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

class NeedsKey extends Error {}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  const headers = new Headers(options.headers || {});
  if (key) headers.set("X-API-Key", key);
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY_STORE);
    askForKey();
    throw new NeedsKey("this service needs an API key");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((body.error && body.error.message) || `HTTP ${response.status}`);
  }
  return body;
}

function askForKey() {
  $("#app").hidden = true;
  $("#key-form").hidden = false;
  setStatus("Enter the API key to continue.");
  $("#api-key").focus();
}

// ---- the model card and the thresholds -------------------------------------------------

async function loadModel() {
  try {
    const info = await api("/labels");
    state.model = info.model;
    state.labels = info.labels.map((l) => l.name);
    for (const l of info.labels) state.calibrated[l.name] = l.threshold;
    state.thresholds = { ...state.calibrated };
    $("#key-form").hidden = true;
    $("#app").hidden = false;
    renderCard(info.model);
    renderSliders();
    const how = info.model.heatmaps ? " Choose a tag to see where it comes from." : "";
    setStatus(`${info.model.name} ${info.model.version}: ${state.labels.length} labels.${how}`);
  } catch (e) {
    if (!(e instanceof NeedsKey)) setStatus(`Cannot load the model: ${e.message}`, true);
  }
}

function renderCard(model) {
  const facts = $("#card-facts");
  const arch = model.architecture || {};
  const rows = [
    ["Name", model.name], ["Version", model.version], ["Description", model.description],
    ["Backbone", arch.backbone], ["Head", arch.head], ["Runs on", model.execution_provider],
    ["Heatmaps", model.heatmaps ? model.heatmaps.method : "not in this model"],
  ];
  facts.replaceChildren(...rows.filter(([, v]) => v).flatMap(([k, v]) =>
    [el("dt", { text: k }), el("dd", { text: String(v) })]));
  const body = $("#metrics tbody");
  const evaluation = (model.evaluation || [])[0];
  body.replaceChildren();
  $("#metrics").hidden = !evaluation;
  if (!evaluation) return;
  $("#metrics caption").textContent =
    `Metrics (${evaluation.dataset}, ${evaluation.split}, ${evaluation.num_images} images)`;
  for (const [name, value] of Object.entries(evaluation.metrics || {})) {
    const shown = typeof value === "number" && !Number.isInteger(value)
      ? value.toFixed(2) : String(value);
    body.append(el("tr", {}, el("td", { text: name }), el("td", { text: shown })));
  }
}

function sliderId(label) {
  return "thr-" + state.labels.indexOf(label);
}

function renderSliders() {
  const list = $("#sliders");
  list.replaceChildren(...state.labels.map((label) => {
    const id = sliderId(label);
    const out = el("output", { for: id, text: state.thresholds[label].toFixed(2) });
    const input = el("input", {
      id, type: "range", min: "0", max: "1", step: "0.01",
      value: String(state.thresholds[label]), "data-label": label,
      oninput: (ev) => {
        state.thresholds[label] = Number(ev.target.value);
        out.textContent = state.thresholds[label].toFixed(2);
        renderAllTags();
      },
    });
    return el("li", { "data-label": label }, el("label", { for: id, text: label }), input, out);
  }));
}

function filterSliders() {
  const q = $("#thr-filter").value.trim().toLowerCase();
  for (const li of $("#sliders").children) {
    li.hidden = q !== "" && !li.dataset.label.toLowerCase().includes(q);
  }
}

function resetThresholds() {
  state.thresholds = { ...state.calibrated };
  renderSliders();
  filterSliders();
  renderAllTags();
}

// ---- images and their tags ---------------------------------------------------------------

async function tagFiles(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/") || f.type === "");
  if (!images.length) return setStatus("Those are not images.", true);
  for (const file of images) {
    const item = { name: file.name, url: URL.createObjectURL(file), result: null, chosen: null };
    state.images.unshift(item);
    const node = renderImage(item);
    $("#results").prepend(node);
    setStatus(`Tagging ${file.name}…`);
    try {
      const form = new FormData();
      form.append("image", file, file.name);
      const explain = state.model.heatmaps ? "&explain=true" : "";
      const body = await api(`/tag?min_score=0${explain}`, { method: "POST", body: form });
      item.result = body.results[0];
      setStatus(`Tagged ${file.name}.`);
    } catch (e) {
      item.result = { tags: [], error: { message: e.message } };
      setStatus(`${file.name}: ${e.message}`, true);
    }
    renderTags(item);
  }
}

function renderImage(item) {
  const img = el("img", { src: item.url, alt: item.name });
  const frame = el("div", { class: "frame" }, img);
  item.node = el("article", { class: "result" }, el("h3", { text: item.name }), frame,
    el("ul", { class: "tags", "aria-label": `Tags of ${item.name}` }));
  img.addEventListener("load", () => drawHeatmap(item));
  return item.node;
}

function visibleTags(item) {
  if (!item.result || item.result.error) return [];
  return item.result.tags.filter((t) => t.score >= state.thresholds[t.label]);
}

function renderTags(item) {
  const list = item.node.querySelector(".tags");
  if (item.result && item.result.error) {
    list.replaceChildren(el("li", { class: "error-text", text: item.result.error.message }));
    return;
  }
  const tags = visibleTags(item);
  if (item.chosen && !tags.some((t) => t.label === item.chosen)) item.chosen = null;
  list.replaceChildren(...tags.map((t) => el("li", {}, tagRow(item, t))));
  if (item.result && !tags.length) list.append(el("li", { class: "hint", text: "No tag." }));
  drawHeatmap(item);
}

function tagRow(item, t) {
  const pct = (100 * t.score).toFixed(0);
  const parts = [
    el("span", { class: "name", text: t.label }),
    el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${pct}%` })),
    el("span", { class: "score", text: t.score.toFixed(2) }),
  ];
  if (!t.heatmap) return el("div", { class: "tag", "data-label": t.label }, ...parts);
  return el("button", {
    type: "button", class: "tag", "data-label": t.label,
    "aria-pressed": String(item.chosen === t.label),
    "aria-label": `${t.label}, score ${t.score.toFixed(2)}: show its heatmap`,
    onclick: () => {
      item.chosen = item.chosen === t.label ? null : t.label;
      renderTags(item);
      item.node.querySelector(`button.tag[data-label="${CSS.escape(t.label)}"]`)?.focus();
    },
  }, ...parts);
}

function renderAllTags() {
  for (const item of state.images) if (item.result) renderTags(item);
}

// ---- heatmaps ----------------------------------------------------------------------------

const RAMP = [[0, 0, 130], [0, 90, 255], [0, 220, 220], [120, 230, 60], [255, 220, 0], [230, 30, 0]];

function colour(v) {
  const x = Math.min(Math.max(v, 0), 1) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c)));
}

// Where the model's input (which the map covers) lies over the shown image, in CSS pixels:
// the manifest's resize, undone (stretch: the whole image; letterbox: plus the padding;
// center_crop: the middle).
function inputBox(prep, w, h) {
  const tw = prep.width, th = prep.height;
  if (prep.resize === "letterbox") {
    const s = Math.min(tw / w, th / h);
    const nw = Math.max(1, Math.round(w * s)), nh = Math.max(1, Math.round(h * s));
    return { x: -Math.floor((tw - nw) / 2) / s, y: -Math.floor((th - nh) / 2) / s,
             w: tw / s, h: th / s };
  }
  if (prep.resize === "center_crop") {
    const s = Math.max(tw / w, th / h);
    const nw = Math.max(tw, Math.round(w * s)), nh = Math.max(th, Math.round(h * s));
    return { x: Math.floor((nw - tw) / 2) / s, y: Math.floor((nh - th) / 2) / s,
             w: tw / s, h: th / s };
  }
  return { x: 0, y: 0, w, h };
}

function drawHeatmap(item) {
  const frame = item.node.querySelector(".frame");
  frame.querySelector("canvas")?.remove();
  const tag = item.chosen && item.result && item.result.tags.find((t) => t.label === item.chosen);
  const img = frame.querySelector("img");
  if (!tag || !tag.heatmap || !img.naturalWidth) return;
  const grid = tag.heatmap, rows = grid.length, cols = grid[0].length;
  const canvas = el("canvas", { width: String(cols), height: String(rows),
    "aria-label": `Heatmap of ${tag.label}`, role: "img", "data-label": tag.label });
  const ctx = canvas.getContext("2d");
  const pixels = ctx.createImageData(cols, rows);
  grid.forEach((row, r) => row.forEach((v, c) => {
    const [red, green, blue] = colour(v);
    pixels.data.set([red, green, blue, Math.round(255 * Math.min(1, 0.15 + v))], 4 * (r * cols + c));
  }));
  ctx.putImageData(pixels, 0, 0);
  // Scale from the image's own pixels to the shown ones; the browser smooths the grid.
  const k = img.clientWidth / img.naturalWidth;
  const box = inputBox(state.model.preprocessing, img.naturalWidth, img.naturalHeight);
  Object.assign(canvas.style, { left: `${box.x * k}px`, top: `${box.y * k}px`,
    width: `${box.w * k}px`, height: `${box.h * k}px` });
  frame.append(canvas);
}

// ---- wiring ------------------------------------------------------------------------------

function wire() {
  const drop = $("#drop"), files = $("#files");
  drop.addEventListener("click", () => files.click());
  drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); files.click(); }
  });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    tagFiles(ev.dataTransfer.files);
  });
  files.addEventListener("change", () => { tagFiles(files.files); files.value = ""; });
  $("#thr-filter").addEventListener("input", filterSliders);
  $("#thr-reset").addEventListener("click", resetThresholds);
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("#api-key").value);
    $("#api-key").value = "";
    loadModel();
  });
  window.addEventListener("resize", () => state.images.forEach(drawHeatmap));
}

wire();
loadModel();
