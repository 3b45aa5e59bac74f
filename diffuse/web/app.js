// The diffuse web page: a form that fills one request for POST /v1/diffuse/stream, the live
// preview of each sampler step, a gallery of results, and a canvas to paint inpainting masks.
// Plain JS, no build step and no CDN: the server ships this file as it is.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, hasInit: false, hasMask: false, abort: null, frames: [] };

// ---------------------------------------------------------------- HTTP with the optional API key

function headers() {
  const key = localStorage.getItem("diffuse-api-key");
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) $("key-row").hidden = false;
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  }
  return response;
}

// Images may need the key too, so they are fetched and shown as blob URLs.
async function blobUrl(url) {
  return URL.createObjectURL(await (await api(url)).blob());
}

// ---------------------------------------------------------------- the form

async function loadConfig() {
  const config = await (await api("/v1/diffuse/config")).json();
  state.config = config;
  const chosen = $("model").value;  // kept when the config is loaded again (after the API key)
  $("model").replaceChildren(...config.models.map((m) => new Option(m.id, m.id)));
  $("model").value = config.models.some((m) => m.id === chosen) ? chosen : config.model;
  // "auto" sends no sampler: the server's default, its own for inpainting (where it measured best).
  const auto = new Option(`auto (${config.defaults.sampler}, inpainting ${config.defaults.inpaint_sampler})`, "", true, true);
  $("sampler").replaceChildren(auto, ...config.samplers.map((s) => new Option(s, s)));
  $("steps").value = config.defaults.steps;
  $("steps").max = config.limits.steps;
  $("n").max = config.limits.n;
  $("guidance").value = config.defaults.guidance;
  $("error").textContent = "";
  chooseModel();
}

// The form follows the chosen model: the sizes it draws, and a few prompts it learned (from its
// training captions) as chips that fill the prompt.
function chooseModel() {
  const model = state.config.models.find((m) => m.id === $("model").value);
  // A distilled student samples only as it was trained: its steps (any, for a consistency model)
  // and sampler, no negative prompt.
  const own = model.sampling;
  $("model-info").textContent = `trained at ${model.image_size}px` +
    (own ? (model.any_steps ? ", a consistency model" : `, distilled to ${own.steps} steps`) : "");
  $("steps").value = own ? own.steps : state.config.defaults.steps;
  for (const id of ["sampler", "negative"]) $(id).disabled = Boolean(own);
  $("steps").disabled = Boolean(own) && !model.any_steps;
  $("live-row").hidden = !own;  // live mode: only a distilled student draws fast enough to keep up with typing
  if (!own) $("live-mode").checked = false;
  $("size").replaceChildren(...model.sizes.map((s) => new Option(s, s)));
  $("prompt").placeholder = model.prompts[0] || "a prompt";
  $("examples").replaceChildren(...model.prompts.map((prompt) => {
    const chip = button(prompt, () => { $("prompt").value = prompt; $("prompt").focus(); });
    chip.className = "chip";
    return chip;
  }));
  if (state.hasInit) setInit(state.init);  // drawn again at the new model's size
}

function sizeWH() {
  const [w, h] = $("size").value.split("x").map(Number);
  return [w, h];
}

function samplingFields(form) {
  const f = { model: $("model").value, negative_prompt: $("negative").value, steps: $("steps").value,
              sampler: $("sampler").value, guidance: $("guidance").value, n: $("n").value, size: $("size").value };
  if ($("seed").value !== "") f.seed = $("seed").value;
  const model = state.config.models.find((m) => m.id === f.model);
  if (model?.sampling) {  // a student: the server fills its own
    if (!model.any_steps) delete f.steps;
    delete f.sampler; delete f.negative_prompt;
  }
  for (const [k, v] of Object.entries(f)) if (v !== "") form.append(k, v);  // empty: the server's default
  return form;
}

function canvasBlob(canvas) {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// The painted strokes as a black-and-white mask (white = repaint) the size of the image.
async function maskBlob() {
  const paint = $("mask-canvas"), out = document.createElement("canvas");
  out.width = paint.width; out.height = paint.height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, out.width, out.height);
  ctx.drawImage(paint, 0, 0);
  return canvasBlob(out);
}

async function requestForm() {
  const form = samplingFields(new FormData());
  form.append("prompt", $("prompt").value);
  if (state.hasInit) {
    form.append("image", await canvasBlob($("init-canvas")), "image.png");
    if (state.hasMask) form.append("mask", await maskBlob(), "mask.png");  // inpainting: strength 1
    else form.append("strength", $("strength").value);
  }
  return form;
}

// ---------------------------------------------------------------- streaming a job

// POST the form, read server-sent events as they come: step -> preview, done -> gallery (in live
// mode the last step's preview, which is the finished image, stays on show instead).
async function stream(form, label) {
  if (state.abort) state.abort.abort();
  const abort = new AbortController();
  state.abort = abort;
  $("error").textContent = "";
  state.frames = [];
  $("formed").hidden = true;
  $("stop").disabled = false;
  $("progress").textContent = `${label}: sending…`;
  try {
    const response = await api("/v1/diffuse/stream", { method: "POST", body: form, signal: abort.signal });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        handleEvent(buffer.slice(0, cut), label);
        buffer = buffer.slice(cut + 2);
      }
    }
  } catch (e) {
    if (e.name === "AbortError") $("progress").textContent = `${label}: stopped.`;
    else $("error").textContent = e.message;
  } finally {
    if (state.abort === abort) { state.abort = null; $("stop").disabled = true; }
  }
}

function handleEvent(text, label) {
  let event = "message", data = "";
  for (const line of text.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  const body = data ? JSON.parse(data) : {};
  if (event === "queued") {
    $("progress").textContent = `${label}: queued (${body.waiting} waiting), seed ${body.seed}`;
  } else if (event === "step") {
    state.frames.push(body);
    $("preview").src = body.preview;
    $("preview").hidden = false;
    $("placeholder").hidden = true;
    $("progress").textContent = `${label}: step ${body.index + 1}/${body.total}, sigma ${body.sigma.toFixed(3)}`;
  } else if (event === "done") {
    showFormed();
    if (label === "live") {
      $("progress").textContent = "live: done. Press Generate to keep it.";
      return;
    }
    $("progress").textContent = `${label}: done.`;
    for (const item of body.data) addCard(item);
  } else if (event === "error") {
    $("error").textContent = body.error.message;
  }
}

// ---------------------------------------------------------------- how it formed

// After a run, scrub through its steps: the noisy image x_t each step started from (scaled as the
// network sees it) beside the model's guess of the clean image, as `diffuse explain denoise` draws.
function showFormed() {
  const frames = state.frames || [];
  $("formed").hidden = frames.length === 0;
  if (!frames.length) return;
  $("formed-step").max = frames.length - 1;
  $("formed-step").value = frames.length - 1;
  showFrame();
}

function showFrame() {
  const f = state.frames[Number($("formed-step").value)];
  $("formed-noisy").src = f.noisy;
  $("formed-guess").src = f.preview;
  $("formed-label").textContent = `step ${f.index + 1} of ${f.total}, sigma ${f.sigma.toFixed(3)}`;
}

$("formed-step").addEventListener("input", showFrame);

// ---------------------------------------------------------------- the gallery

function describe(p) {
  const parts = [`“${p.prompt}”`, p.negative_prompt ? `not “${p.negative_prompt}”` : "", `seed ${p.seed}`,
                 `${p.steps} steps ${p.sampler}`, `guidance ${p.guidance}`, `${p.width}x${p.height}`, p.mode, p.model];
  if (p.strength !== undefined) parts.push(`strength ${p.strength}`);
  return parts.filter(Boolean).join(" · ");
}

async function addCard(item) {
  const card = document.createElement("figure");
  card.className = "card";
  const img = document.createElement("img");
  img.alt = item.parameters.prompt;
  img.src = await blobUrl(item.url);
  const params = document.createElement("figcaption");
  params.className = "params";
  params.textContent = describe(item.parameters);
  const download = document.createElement("a");
  download.className = "download";
  download.textContent = "Download";
  download.href = img.src;
  download.download = `${item.parameters.seed}-${item.parameters.prompt.replace(/[^a-z0-9]+/gi, "-").slice(0, 40)}.png`;
  const vary = button("Variations", () => {
    const form = samplingFields(new FormData());
    form.set("model", item.parameters.model);  // the model that drew it, at the image's own size
    form.delete("size");
    form.set("seed", String(Math.floor(Math.random() * 2 ** 31)));
    form.append("image_id", item.id);
    form.append("variations", "true");
    stream(form, "variations");
  });
  vary.className = "vary";
  const edit = button("Edit", async () => setInit(await loadImage(img.src)));
  edit.className = "edit";
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(download, vary, edit);
  card.append(img, params, actions);
  $("gallery").prepend(card);
}

function button(text, onclick) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = text; b.onclick = onclick;
  return b;
}

// ---------------------------------------------------------------- the init image and its mask

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("this file is not an image the browser can read"));
    img.src = src;
  });
}

// "Made by": what an uploaded image says about where it came from (POST /v1/diffuse/inspect):
// the parameters it records, whether its content credentials (C2PA) hold, and its watermark.
async function madeBy(file) {
  const panel = $("made-by"), form = new FormData();
  form.append("image", file, file.name);
  panel.hidden = false;
  panel.textContent = "Reading what the image records…";
  try {
    const report = await (await api("/v1/diffuse/inspect", { method: "POST", body: form })).json();
    panel.textContent = describeOrigin(report);
  } catch (e) {
    panel.textContent = `Could not read it: ${e.message}`;
  }
}

function describeOrigin(r) {
  const lines = [];
  const c = r.credentials;
  if (c) {
    const verdict = c.valid ? "valid: unchanged since it was signed" : `not valid (${(c.problems || []).join("; ") || "changed after signing"})`;
    lines.push(`Content credentials: ${c.meaning || c.digital_source_type || "present"}; signed by ${c.signer || "unknown"}; ${verdict}.`);
    if (c.model) lines.push(`Model: ${c.model}${c.model_sha256 ? " (weights " + c.model_sha256.slice(0, 12) + "…)" : ""}.`);
  } else {
    lines.push("No content credentials.");
  }
  if (r.parameters) {
    const p = r.parameters;
    lines.push(`Recorded: “${p.prompt ?? ""}”, seed ${p.seed}, ${p.steps} steps, model ${p.model}.`);
    if (r.recreate && r.recreate.command) lines.push(`Make it again: ${r.recreate.command}`);
  } else {
    lines.push("No diffuse parameters: not made by diffuse, or its metadata was removed.");
  }
  const w = r.watermark;
  if (w && w.found) {
    lines.push(`Watermark: found, model ${w.model}'s start-noise mark (${w.agree} of ${w.signs} signs agree; ` +
               `chance on an unmarked image ${w.p_value.toExponential(0)}).`);
  } else if (w) {
    lines.push(`Watermark: not found by ${w.tried.join(", ")} (best ${w.agree} of ${w.signs} signs).`);
  }
  return lines.join("\n");
}

// The image is drawn at the chosen output size, so any upload becomes a size the model makes.
function setInit(img) {
  const [w, h] = sizeWH();
  for (const c of [$("init-canvas"), $("mask-canvas")]) { c.width = w; c.height = h; }
  $("init-canvas").getContext("2d").drawImage(img, 0, 0, w, h);
  state.init = img; state.hasInit = true; state.hasMask = false;
  $("init-box").hidden = false;
}

function clearInit() {
  state.init = null; state.hasInit = false; state.hasMask = false;
  $("init-box").hidden = true;
  $("made-by").hidden = true;
  $("init-file").value = "";
}

function paintAt(event) {
  const canvas = $("mask-canvas"), box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * canvas.width / box.width;
  const y = (event.clientY - box.top) * canvas.height / box.height;
  const r = Number($("brush").value) * canvas.width / 64;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill();
  state.hasMask = true;
}

function wireMask() {
  const canvas = $("mask-canvas");
  let painting = false;
  canvas.addEventListener("pointerdown", (e) => { painting = true; canvas.setPointerCapture(e.pointerId); paintAt(e); });
  canvas.addEventListener("pointermove", (e) => { if (painting) paintAt(e); });
  canvas.addEventListener("pointerup", () => { painting = false; });
  $("clear-mask").onclick = () => {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    state.hasMask = false;
  };
}

// ---------------------------------------------------------------- start

function start() {
  $("api-key").value = localStorage.getItem("diffuse-api-key") || "";
  $("key-row").addEventListener("submit", (e) => e.preventDefault());
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("diffuse-api-key", $("api-key").value);
    loadConfig().catch((e) => { $("error").textContent = e.message; });
  });
  $("gen-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const label = !state.hasInit ? "generate" : state.hasMask ? "inpaint" : "image-to-image";
    stream(await requestForm(), label);
  });
  $("stop").onclick = () => { if (state.abort) state.abort.abort(); };
  // Live mode: each pause in typing draws the prompt again (stream() stops the run before), at one
  // seed, so that Generate then draws the image on show.
  $("live-mode").addEventListener("change", () => {
    if ($("live-mode").checked && $("seed").value === "") $("seed").value = String(Math.floor(Math.random() * 2 ** 31));
  });
  let typing = null;
  $("prompt").addEventListener("input", () => {
    if (!$("live-mode").checked || state.hasInit) return;
    clearTimeout(typing);
    typing = setTimeout(async () => {
      if (!$("prompt").value.trim()) return;
      const form = await requestForm();
      form.set("n", "1");  // one image: the preview shows it
      stream(form, "live");
    }, 300);
  });
  $("init-file").addEventListener("change", async () => {
    const file = $("init-file").files[0];
    if (!file) return;
    try { setInit(await loadImage(URL.createObjectURL(file))); } catch (e) { $("error").textContent = e.message; }
    madeBy(file);
  });
  $("size").addEventListener("change", () => { if (state.hasInit) setInit(state.init); });
  $("model").addEventListener("change", chooseModel);
  $("clear-init").onclick = clearInit;
  wireMask();
  loadConfig().catch((e) => { $("error").textContent = e.message; });
}

start();
