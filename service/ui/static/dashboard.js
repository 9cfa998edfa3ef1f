// The dashboard's one script: fetches everything from the API with the tab's key, draws the
// learning curves itself, and builds every element with textContent (never innerHTML).
"use strict";

const KEY = "kts-api-key";
const TERMINAL = ["succeeded", "failed", "cancelled"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

class AuthNeeded extends Error {}
class ApiFailure extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.details = error.details || [];
  }
}

// --- Elements -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(node, on) { node.hidden = !on; }

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString("en");
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : v.toPrecision(4).replace(/\.?0+$/, "");
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", { text: k }), el("dd", { text: v }));
}

function fail(err) {
  if (err instanceof AuthNeeded) return;
  const box = $("page-error");
  const missing = err instanceof ApiFailure && err.status === 404;
  box.textContent = missing ? `Not found: ${err.message}` : String(err.message || err);
  show(box, true);
  if (missing) show($("content"), false);
}

// --- The API key and calls ------------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askForKey(message) {
  show($("content"), false);
  show($("key-form"), true);
  $("key-error").textContent = message || "";
  show($("key-error"), Boolean(message));
  $("key-input").focus();
  throw new AuthNeeded();
}

async function api(path, options = {}) {
  if (document.body.dataset.auth === "required" && !sessionStorage.getItem(KEY)) askForKey();
  const headers = { ...authHeaders(), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    askForKey("That key was refused (unknown or revoked).");
  }
  if (!response.ok) throw new ApiFailure(response.status, await response.json().catch(() => null));
  return response;
}

const getJson = async (path) => (await api(path)).json();
const postJson = async (path, body) => (await api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body,
})).json();

async function image(container, path, alt) {
  // An <img src> cannot send the key: fetch the bytes and show them from a blob: URL.
  const blob = await (await api(path)).blob();
  const img = el("img", { alt, src: URL.createObjectURL(blob) });
  img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
  container.append(el("figure", {}, img, el("figcaption", { text: alt })));
}

function errorList(box, err) {
  box.replaceChildren(el("p", { text: err.message }));
  const items = (err.details || []).map((d) => el("li", { text: `${(d.loc || []).join(".") || "(body)"}: ${d.msg}` }));
  if (items.length) box.append(el("ul", {}, ...items));
  show(box, true);
}

// --- Server-Sent Events over fetch (EventSource cannot send the key) ------------------------

function follow(path, onEvent, onState) {
  let lastId = null;
  let stopped = false;
  let delay = 1000;
  const controller = new AbortController();
  const dispatch = (event) => {
    if (event.id !== null) lastId = event.id;
    if (event.data !== null) onEvent(event.type || "message", JSON.parse(event.data));
  };
  async function read() {
    const headers = { Accept: "text/event-stream", ...(lastId !== null ? { "Last-Event-ID": lastId } : {}) };
    const response = await api(path, { headers, signal: controller.signal });
    onState("live");
    delay = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { id: null, type: null, data: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split(/\r\n|\r|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") { dispatch(event); event = { id: null, type: null, data: null }; continue; }
        if (line.startsWith(":")) continue;  // a comment: the keep-alive
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        const val = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (field === "id") event.id = val;
        else if (field === "event") event.type = val;
        else if (field === "data") event.data = event.data === null ? val : `${event.data}\n${val}`;
      }
    }
  }
  async function loop() {
    while (!stopped) {
      try {
        await read();
      } catch (err) {
        if (err instanceof AuthNeeded || (err instanceof ApiFailure && err.status === 404)) { fail(err); return; }
      }
      if (stopped) return;
      onState("reconnecting");
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
    }
  }
  loop();
  return () => { stopped = true; controller.abort(); onState("closed"); };
}

// --- Charts ---------------------------------------------------------------------------------

const W = 520, H = 240, PAD = { l: 64, r: 16, t: 14, b: 30 };
const tick = (v) => (Math.abs(v) < 1e-12 ? "0" : Math.abs(v) < 1e-2 || Math.abs(v) >= 1e5 ? v.toExponential(1) : String(Number(v.toPrecision(3))));

function chart(title, series, epochs) {
  // series: [{name, values}] with values[i] the metric at epoch i+1 (null when not finite).
  const all = series.flatMap((s) => s.values).filter((v) => typeof v === "number");
  const n = Math.max(...series.map((s) => s.values.length));
  const xMax = Math.max(epochs || 1, n, 2);
  let lo = Math.min(...all), hi = Math.max(...all);
  if (!all.length) { lo = 0; hi = 1; }
  if (hi - lo < 1e-12) { lo -= 0.5 * (Math.abs(lo) || 1); hi += 0.5 * (Math.abs(hi) || 1); }
  const span = hi - lo, nonNegative = lo >= 0;
  lo -= span * 0.05; hi += span * 0.05;
  if (nonNegative) lo = Math.max(lo, 0);  // a loss axis never dips below zero
  const x = (e) => PAD.l + ((e - 1) / (xMax - 1)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - ((v - lo) / (hi - lo)) * (H - PAD.t - PAD.b);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title, "data-points": n });
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: PAD.l - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, tick(v)));
  }
  for (const e of new Set([1, Math.round((xMax + 1) / 2), xMax])) {
    root.append(svg("text", { x: x(e), y: H - PAD.b + 18, class: "tick", "text-anchor": "middle" }, String(e)));
  }
  root.append(svg("text", { x: W - PAD.r, y: H - 2, class: "tick", "text-anchor": "end" }, "epoch"));
  series.forEach((s, k) => {
    const pts = s.values.map((v, i) => (typeof v === "number" ? [x(i + 1), y(v)] : null)).filter(Boolean);
    root.append(svg("polyline", { points: pts.map((p) => p.join(",")).join(" "), class: `line s${k}` }));
    if (pts.length <= 80) for (const [px, py] of pts) root.append(svg("circle", { cx: px, cy: py, r: 2.5, class: `dot s${k}` }));
  });
  const legend = el("div", { class: "legend" }, ...series.map((s, k) => el("span", { class: `key s${k}`, text: s.name })));
  return el("figure", { class: "chart-box" }, el("figcaption", { text: title }), root, legend);
}

function drawCurves(history, epochs) {
  const skip = new Set(["epoch_seconds", "momentum"]);
  const names = Object.keys(history).filter((k) => !skip.has(k) && !k.startsWith("val_"));
  names.sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : a === "learning_rate" ? 1 : b === "learning_rate" ? -1 : a.localeCompare(b)));
  const figures = names.map((name) => {
    const series = [{ name, values: history[name] }];
    if (history[`val_${name}`]) series.push({ name: `val_${name}`, values: history[`val_${name}`] });
    return chart(name.replace(/_/g, " "), series, epochs);
  });
  $("charts").replaceChildren(...figures);
  show($("charts-empty"), figures.length === 0);
}

// --- Pages ----------------------------------------------------------------------------------

function statusBadge(node, status) {
  node.textContent = status;
  node.className = `badge ${status}`;
}

async function jobsPage() {
  const body = $("jobs-body");
  async function refresh() {
    const page = await getJson("/v1/jobs?limit=50");
    body.replaceChildren(...page.items.map((job) => {
      const link = el("a", { href: `/ui/jobs/${encodeURIComponent(job.id)}`, text: job.name || job.id });
      const model = job.model_id ? el("a", { href: `/ui/models/${encodeURIComponent(job.model_id)}`, text: "model" }) : "–";
      const bar = el("progress", { max: String(job.progress.epochs || 1), value: String(job.progress.epoch) });
      return el("tr", { "data-job-id": job.id },
        el("td", {}, link), el("td", { text: job.kind }), el("td", {}, el("span", { class: `badge ${job.status}`, text: job.status })),
        el("td", {}, bar, ` ${job.progress.epoch}/${job.progress.epochs}`), el("td", { text: when(job.created_at) }), el("td", {}, model));
    }));
    show($("jobs-empty"), page.items.length === 0);
    $("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }
  $("submit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const box = $("submit-error");
    show(box, false);
    let text = $("spec-input").value;
    try { text = JSON.stringify(JSON.parse(text)); } catch (err) { errorList(box, { message: `Not valid JSON: ${err.message}` }); return; }
    $("submit-button").disabled = true;
    try {
      const job = await postJson("/v1/jobs", text);
      window.location.assign(`/ui/jobs/${encodeURIComponent(job.id)}`);
    } catch (err) {
      if (!(err instanceof AuthNeeded)) errorList(box, err);
    } finally {
      $("submit-button").disabled = false;
    }
  });
  await refresh();
  poll(refresh, 2000);
}

function poll(fn, ms) {
  // One call at a time (a slow answer never piles up calls); a passing failure is shown and
  // retried, a missing key or object ends the polling.
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      await fn();
      show($("page-error"), false);
    } catch (err) {
      fail(err);
      if (err instanceof AuthNeeded || (err instanceof ApiFailure && err.status === 404)) return;
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => { stopped = true; clearTimeout(timer); };
}

async function jobPage() {
  const id = document.body.dataset.jobId;
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  const history = {};
  let epochs = 0;
  let shownPlots = "";
  let stopPolling = () => {};
  let stopStream = () => {};

  function render(job) {
    epochs = job.progress.epochs;
    document.title = `${job.name} · Keras Training Service`;
    $("job-name").textContent = job.name || job.id;
    statusBadge($("job-status"), job.status);
    $("job-progress").max = job.progress.epochs || 1;
    $("job-progress").value = job.progress.epoch;
    $("job-progress-text").textContent = `epoch ${job.progress.epoch} of ${job.progress.epochs}`;
    const final = Object.entries(job.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
    facts($("job-facts"), [["kind", job.kind], ["engine", job.engine || "–"], ["created", when(job.created_at)],
      ["started", when(job.started_at)], ["finished", when(job.finished_at)], ["attempts", String(job.attempts)],
      ["final metrics", final || "–"]]);
    const error = $("job-error");
    error.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
    show(error, Boolean(job.error));
    show($("job-cancel"), !TERMINAL.includes(job.status));
    if (job.model_id) $("job-model").href = `/ui/models/${encodeURIComponent(job.model_id)}`;
    show($("job-model"), Boolean(job.model_id));
    $("warnings").replaceChildren(...(job.warnings || []).map((w) => el("li", {}, el("strong", { text: w.code || "warning" }), ` ${w.message || ""}`)));
    show($("warnings-card"), (job.warnings || []).length > 0);
    const plots = (job.plots || []).filter((p) => p === "gradient_health" || p === "activation_saturation");
    const key = `${plots.join(",")}|${job.status}`;
    if (plots.length && key !== shownPlots) {
      shownPlots = key;
      loadPlots(plots, job.status).catch(() => { shownPlots = ""; });  // tried again at the next poll
    }
    show($("plots-card"), plots.length > 0);
    if (TERMINAL.includes(job.status)) stopPolling();
  }

  async function loadPlots(plots, status) {
    // Drawn into a new box, swapped in when complete, so the page never shows half a set;
    // data-status says which state of the job the images show.
    const box = el("div", { class: "plots", id: "plots", "data-status": status });
    for (const p of plots) await image(box, `${path}/plots/${p}?format=png`, p.replace(/_/g, " "));
    $("plots").replaceWith(box);
  }

  $("job-cancel").addEventListener("click", async () => {
    $("job-cancel").disabled = true;
    try { render(await postJson(`${path}/cancel`, "{}")); } catch (err) { fail(err); } finally { $("job-cancel").disabled = false; }
  });
  const job = await getJson(path);
  render(job);
  stopStream = follow(`${path}/events`, (type, data) => {
    if (type === "progress") {
      for (const [k, v] of Object.entries(data.metrics)) {
        history[k] = history[k] || [];
        history[k][data.epoch - 1] = v;
      }
      epochs = data.epochs;
      statusBadge($("job-status"), data.status);
      $("job-progress").value = data.epoch;
      $("job-progress-text").textContent = `epoch ${data.epoch} of ${data.epochs}`;
      drawCurves(history, epochs);
    } else if (type === "done") {
      stopStream();
      render(data);
    }
  }, (state) => { $("stream-state").textContent = state === "live" ? "live" : state; });
  if (!TERMINAL.includes(job.status)) stopPolling = poll(async () => render(await getJson(path)), 2000);
}

async function modelPage() {
  const id = document.body.dataset.modelId;
  const path = `/v1/models/${encodeURIComponent(id)}`;
  const model = await getJson(path);
  document.title = `${model.name} v${model.version} · Keras Training Service`;
  $("model-name").textContent = model.name;
  $("model-version").textContent = `version ${model.version}`;
  const s = model.summary || {};
  const job = model.job_id ? el("a", { href: `/ui/jobs/${encodeURIComponent(model.job_id)}`, text: model.job_id }) : null;
  facts($("model-facts"), [["task", model.task], ["classes", model.n_classes === null ? "–" : String(model.n_classes)],
    ["input shape", JSON.stringify(model.input_shape)], ["parameters", `${fmt(s.total_params)} (${fmt(s.trainable_params)} trainable)`],
    ["backend", model.backend], ["aliases", (model.aliases || []).join(", ") || "–"], ["created", when(model.created_at)]]);
  if (job) $("model-facts").append(el("dt", { text: "job" }), el("dd", {}, job));
  const rows = (obj) => Object.entries(obj || {}).map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: fmt(v) })));
  $("metrics-table").tBodies[0].replaceChildren(...rows(model.metrics));
  const u = model.uncertainty;
  if (u) {
    $("uncertainty-note").textContent = `${u.rows} ${u.split} rows, ${u.mc_samples} MC samples`;
    const names = [...new Set([...Object.keys(u.plain || {}), ...Object.keys(u.mc_dropout || {})])];
    $("uncertainty-table").tBodies[0].replaceChildren(...names.map((k) => el("tr", {},
      el("th", { text: k }), el("td", { text: fmt((u.plain || {})[k]) }), el("td", { text: fmt((u.mc_dropout || {})[k]) }))));
  }
  show($("uncertainty-card"), Boolean(u));
  $("layers-table").tBodies[0].replaceChildren(...(s.layers || []).map((l) => el("tr", {},
    el("td", { text: l.name }), el("td", { text: l.class_name }), el("td", { text: JSON.stringify(l.output_shape) }),
    el("td", { text: fmt(l.params) }), el("td", { text: l.trainable ? "yes" : "no" }))));
  if ((model.plots || []).includes("reliability")) {
    show($("reliability-card"), true);
    await image($("reliability"), `${path}/plots/reliability?format=png`, "reliability diagram");
  }
  const size = model.input_shape.reduce((a, b) => a * b, 1);
  $("predict-help").textContent = `Paste one row: ${size} comma-separated numbers (the model's input shape ${JSON.stringify(model.input_shape)}), or pick a row of the data set it was trained on.`;
  $("predict-form").addEventListener("submit", (ev) => { ev.preventDefault(); predict(model, path, size); });
  if (model.job_id) await rowPicker(model.job_id);
}

// The data set of the model's training job: built-in by name, uploaded by id.
async function rowPicker(jobId) {
  let spec;
  try { spec = (await getJson(`/v1/jobs/${encodeURIComponent(jobId)}`)).spec; } catch (_) { return; }
  const ref = (spec && spec.dataset) || {};
  const base = ref.builtin ? `/v1/datasets/builtin/${encodeURIComponent(ref.builtin)}` : ref.id ? `/v1/datasets/${encodeURIComponent(ref.id)}` : null;
  if (!base) return;
  $("pick-dataset").textContent = ref.builtin || ref.id;
  show($("pick-form"), true);
  $("pick-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const offset = Math.max(0, Number($("pick-input").value) || 0);
    try {
      const page = await getJson(`${base}/rows?offset=${offset}&limit=1`);
      const r = page.rows[0];
      if (!r) { $("pick-label").textContent = `no row ${offset} (${page.total} rows)`; return; }
      $("row-input").value = r.x.flat(Infinity).join(", ");
      $("pick-label").textContent = `label ${r.class_name ?? r.label} · ${page.total} rows`;
    } catch (err) { $("pick-label").textContent = String(err.message || err); }
  });
}

function reshape(flat, shape) {
  if (shape.length <= 1) return flat;
  const step = flat.length / shape[0];
  return Array.from({ length: shape[0] }, (_, i) => reshape(flat.slice(i * step, (i + 1) * step), shape.slice(1)));
}

async function predict(model, path, size) {
  const box = $("predict-error");
  show(box, false);
  const values = $("row-input").value.split(/[\s,;]+/).filter((t) => t !== "").map(Number);
  if (values.length !== size || values.some((v) => !Number.isFinite(v))) {
    errorList(box, { message: `Expected ${size} finite numbers. Received: ${values.length} values.` });
    return;
  }
  const body = { instances: [reshape(values, model.input_shape)], mc_samples: Number($("mc-input").value || 0) };
  if ($("seed-input").value !== "") body.seed = Number($("seed-input").value);
  $("predict-button").disabled = true;
  try {
    const answer = await postJson(`${path}/predict`, JSON.stringify(body));
    showPrediction(model, answer);
  } catch (err) {
    if (!(err instanceof AuthNeeded)) errorList(box, err);
  } finally {
    $("predict-button").disabled = false;
  }
}

function showPrediction(model, answer) {
  const p = answer.predictions[0];
  const mc = answer.mc_samples > 0;
  const mean = mc ? p.mean : p;
  const std = mc ? p.std : mean.map(() => 0);
  const labels = mean.map((_, i) => (model.class_names && model.class_names[i]) || String(i));
  const parts = [];
  if (model.task === "classification") {
    const best = mc ? p.class : mean.indexOf(Math.max(...mean));
    parts.push(`class ${labels[best]}`);
  }
  if (mc && p.predictive_entropy !== undefined) parts.push(`predictive entropy ${fmt(p.predictive_entropy)}`, `mutual information ${fmt(p.mutual_information)}`);
  parts.push(mc ? `${answer.mc_samples} MC samples` : "plain prediction");
  $("prediction-summary").textContent = parts.join(" · ");
  $("prediction-bars").replaceChildren(bars(labels, mean, std, model.task === "classification"));
  show($("prediction"), true);
}

function bars(labels, mean, std, probabilities) {
  const rowH = 22, left = 90, right = 150, width = 620;
  const top = probabilities ? 1 : Math.max(...mean.map((m, i) => Math.abs(m) + std[i]), 1e-12);
  const scale = (v) => (Math.max(0, Math.min(v, top)) / top) * (width - left - right);
  const root = svg("svg", { viewBox: `0 0 ${width} ${rowH * mean.length + 4}`, class: "bars", role: "img", "aria-label": "mean and std per output" });
  mean.forEach((m, i) => {
    const yy = i * rowH + 2;
    const g = svg("g", { class: "bar-row", "data-mean": m, "data-std": std[i] });
    g.append(svg("text", { x: left - 8, y: yy + 15, class: "tick", "text-anchor": "end" }, labels[i]));
    g.append(svg("rect", { x: left, y: yy + 3, width: width - left - right, height: rowH - 6, class: "track" }));
    g.append(svg("rect", { x: left, y: yy + 3, width: scale(Math.abs(m)), height: rowH - 6, class: "bar" }));
    if (std[i] > 0) {
      const a = left + scale(Math.abs(m) - std[i]), b = left + scale(Math.abs(m) + std[i]);
      g.append(svg("line", { x1: a, x2: b, y1: yy + rowH / 2, y2: yy + rowH / 2, class: "whisker" }));
    }
    g.append(svg("text", { x: width - right + 8, y: yy + 15, class: "tick" }, std[i] > 0 ? `${fmt(m)} ± ${fmt(std[i])}` : fmt(m)));
    root.append(g);
  });
  return root;
}

// --- Start ----------------------------------------------------------------------------------

const PAGES = { jobs: jobsPage, job: jobPage, model: modelPage };

function start() {
  show($("key-state"), Boolean(sessionStorage.getItem(KEY)));
  const page = PAGES[document.body.dataset.page];
  if (!page) return;
  Promise.resolve().then(() => {
    show($("content"), true);
    return page();
  }).catch(fail);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("key-input").value.trim());
    // Reload so that every timer and stream starts again with the key.
    window.location.reload();
  });
  $("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); window.location.reload(); });
  start();
});
