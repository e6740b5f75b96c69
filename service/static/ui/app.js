// The reprotrain web UI: runs, one job, and any two jobs compared. Plain ES module, no build step.
// Everything it shows comes from the API (/v1/...), with the browser's session cookie; every value
// from a job is inserted as text (esc, textContent), never as markup.

const main = document.getElementById("main");
const STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "TIMED_OUT"];
const VERDICTS = ["identical", "results_identical", "metrics_identical", "diverged", "incomparable", "none"];
const FINAL = new Set(["SUCCEEDED", "FAILED", "CANCELED", "TIMED_OUT"]);
const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700"];
const LOG_KEEP = 200_000; // characters of each log kept on the page

// what tests and the curious can read: the charts on the page, by metric, and how numbers are shown
window.reprotrain = { charts: {}, format: {} };

class AuthNeeded extends Error {}

const esc = (v) =>
  String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const short = (id) => esc(String(id).slice(0, 8));
const enc = encodeURIComponent;

async function request(path, { method = "GET", body } = {}) {
  const headers = { "X-Reprotrain-UI": "1" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) throw new AuthNeeded();
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try {
      message = (await r.json()).error?.message || message;
    } catch {}
    throw new Error(message);
  }
  return r;
}

async function api(path, opts) {
  const r = await request(path, opts);
  return r.status === 204 ? null : r.json();
}

// ---- navigation -----------------------------------------------------------------------------
let generation = 0; // bumped on every navigation: a page's timers stop when it is no longer shown

function go(path) {
  history.pushState(null, "", path);
  route();
}

document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-link]");
  if (a && e.button === 0 && !e.ctrlKey && !e.metaKey && !e.shiftKey) {
    e.preventDefault();
    go(a.getAttribute("href"));
  }
});
window.addEventListener("popstate", route);
// a request still in flight when the session ended (sign-out, a token revoked): ask to sign in
window.addEventListener("unhandledrejection", (e) => {
  if (e.reason instanceof AuthNeeded) {
    e.preventDefault();
    showLogin();
  }
});

function every(gen, ms, fn) {
  const tick = async () => {
    if (gen !== generation) return;
    let again = true;
    try {
      again = (await fn()) !== false;
    } catch (e) {
      if (e instanceof AuthNeeded) return showLogin();
      console.warn(e);
    }
    if (again && gen === generation) setTimeout(tick, ms);
  };
  setTimeout(tick, ms);
}

async function route() {
  const gen = ++generation;
  window.reprotrain.charts = {};
  const path = location.pathname;
  try {
    const session = await api("/v1/session");
    if (!session.signed_in) return showLogin();
    whoami(session);
    await loadUPlot();
    let m;
    if (path === "/") await runsPage(gen);
    else if ((m = path.match(/^\/jobs\/([^/]+)$/))) await jobPage(gen, decodeURIComponent(m[1]));
    else if ((m = path.match(/^\/compare\/([^/]+)\/([^/]+)$/)))
      await comparePage(gen, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    else main.innerHTML = `<p>No page here. <a href="/" data-link>Runs</a></p>`;
  } catch (e) {
    if (gen !== generation) return; // the user has moved on (or deleted what this page showed)
    if (e instanceof AuthNeeded) return showLogin();
    main.innerHTML = `<div class="error"><b>Could not load this page:</b> ${esc(e.message)}</div>`;
  }
}

function whoami(session) {
  const who = document.getElementById("who");
  if (!session.auth_required) {
    who.textContent = "no sign-in (loopback)";
    return;
  }
  who.innerHTML = `<button id="signout">Sign out</button>`;
  document.getElementById("signout").onclick = async () => {
    await api("/v1/session", { method: "DELETE" });
    showLogin();
  };
}

function showLogin(message = "") {
  generation++;
  document.getElementById("who").textContent = "";
  main.innerHTML = `
    <form class="login" id="login">
      <h1>Sign in</h1>
      <p class="muted">This server wants an API token (REPROTRAIN_API_TOKENS). It is kept for this
      browser session only, in a cookie scripts cannot read.</p>
      <input type="password" name="token" placeholder="API token" autocomplete="current-password" required>
      <button class="primary">Sign in</button>
      <p class="error-line" id="login-error">${esc(message)}</p>
    </form>`;
  document.getElementById("login").onsubmit = async (e) => {
    e.preventDefault();
    const token = e.target.token.value;
    try {
      await api("/v1/session", { method: "POST", body: { token } });
      route();
    } catch (err) {
      showLogin(err instanceof AuthNeeded ? "That token is not valid." : err.message);
    }
  };
}

let uplotLoaded = null;
function loadUPlot() {
  if (window.uPlot) return Promise.resolve();
  uplotLoaded ??= new Promise((resolve, reject) => {
    const css = document.createElement("link");
    css.rel = "stylesheet";
    css.href = "/static/vendor/uplot/uPlot.min.css";
    document.head.append(css);
    const s = document.createElement("script");
    s.src = "/static/vendor/uplot/uPlot.iife.min.js";
    s.onload = resolve;
    s.onerror = () => {
      uplotLoaded = null;
      reject(new Error("the chart library did not load"));
    };
    document.head.append(s);
  });
  return uplotLoaded;
}

// ---- formatting -----------------------------------------------------------------------------
const badge = (status) => `<span class="badge s-${esc(status)}" data-status="${esc(status)}">${esc(status)}</span>`;
const verdictBadge = (kind) =>
  kind ? `<span class="badge v-${esc(kind)}" data-verdict="${esc(kind)}">${esc(kind.replace("_", " "))}</span>` : "";

// two values, with every digit where six do not tell them apart (7.88951 and 7.88951)
function nums(a, b) {
  const [x, y] = [num(a), num(b)];
  return x === y && a !== b && typeof a === "number" && typeof b === "number" ? `${a} → ${b}` : `${x} → ${y}`;
}

window.reprotrain.format.nums = nums;

function num(v) {
  if (typeof v !== "number") return esc(typeof v === "object" ? JSON.stringify(v) : v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(4) : v.toPrecision(6).replace(/\.?0+$/, "");
}

function secs(s) {
  if (s == null) return "";
  if (s < 1) return `${(s * 1000).toFixed(0)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function when(iso) {
  if (!iso) return "";
  const t = new Date(iso);
  const ago = (Date.now() - t.getTime()) / 1000;
  const rel = ago < 60 ? `${Math.max(0, Math.round(ago))} s ago` : ago < 3600 ? `${Math.round(ago / 60)} min ago`
    : ago < 86400 ? `${Math.round(ago / 3600)} h ago` : t.toISOString().slice(0, 10);
  return `<span title="${esc(t.toISOString())}">${rel}</span>`;
}

const between = (a, b) => (a && b ? (new Date(b) - new Date(a)) / 1000 : null);

function metrics(m, most = 3) {
  const entries = Object.entries(m || {}).filter(([, v]) => typeof v !== "object" || v === null);
  return entries.slice(0, most).map(([k, v]) => `<span class="metric">${esc(k)} <b>${num(v)}</b></span>`).join("");
}

function flatten(obj, prefix = "", out = {}) {
  if (obj && typeof obj === "object" && !Array.isArray(obj) && Object.keys(obj).length) {
    for (const [k, v] of Object.entries(obj)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) out[prefix] = obj;
  return out;
}

// a value as text: unset or null as a dash, a flat mapping as "key value · key value", else JSON
const show = (v) => {
  if (v === undefined || v === null) return `<span class="muted">—</span>`;
  if (typeof v === "string") return esc(v);
  const flat = typeof v === "object" && !Array.isArray(v) && Object.values(v).every((x) => x === null || typeof x !== "object");
  if (flat && Object.keys(v).length) return Object.entries(v).map(([k, x]) => `${esc(k)} ${esc(JSON.stringify(x))}`).join(" · ");
  return esc(JSON.stringify(v));
};

function kvTable(obj) {
  const rows = Object.entries(flatten(obj)).map(([k, v]) => `<tr><td class="mono">${esc(k)}</td><td class="mono">${show(v)}</td></tr>`);
  return `<table class="kv">${rows.join("") || `<tr><td class="muted">nothing</td><td></td></tr>`}</table>`;
}

// ---- runs -----------------------------------------------------------------------------------
const PAGE = 50;

async function runsPage(gen) {
  const q = new URLSearchParams(location.search);
  const opt = (values, chosen, any) =>
    `<option value="">${any}</option>` +
    values.map((v) => `<option value="${v}" ${v === chosen ? "selected" : ""}>${v.toLowerCase().replace("_", " ")}</option>`).join("");
  main.innerHTML = `
    <h1>Runs <span class="muted" id="count"></span></h1>
    <form class="filters" id="filters">
      <select name="status" aria-label="status">${opt(STATUSES, q.get("status"), "any status")}</select>
      <input name="search" placeholder="name or id" value="${esc(q.get("search") || "")}" aria-label="name or id">
      <input name="tag" placeholder="tag" value="${esc(q.get("tag") || "")}" aria-label="tag">
      <input name="project" placeholder="project" value="${esc(q.get("project") || "")}" aria-label="project" size="12">
      <select name="verdict" aria-label="verdict">${opt(VERDICTS, q.get("verdict"), "any verdict")}</select>
      <button>Filter</button>
      <span class="muted">updates live</span>
    </form>
    <div class="wide-table"><table class="runs">
      <thead><tr><th>status</th><th>name</th><th>tags</th><th>seed</th><th>policy</th><th>queue</th>
      <th>created</th><th>duration</th><th>final metrics</th><th>verdict</th><th>re-run of</th></tr></thead>
      <tbody id="rows"></tbody>
    </table></div>
    <div class="pager"><button id="newer">← newer</button><span id="range" class="muted"></span><button id="older">older →</button></div>`;
  const offset = Number(q.get("offset") || 0);
  const filters = new URLSearchParams([...q].filter(([k, v]) => v && k !== "offset"));
  const page = (o) => go(`/?${new URLSearchParams([...filters, ...(o ? [["offset", o]] : [])])}`);
  const form = document.getElementById("filters");
  form.onsubmit = (e) => {
    e.preventDefault();
    const f = new URLSearchParams([...new FormData(form)].filter(([, v]) => v));
    go(`/?${f}`);
  };
  for (const select of form.querySelectorAll("select")) select.onchange = () => form.requestSubmit(); // a choice applies at once
  document.getElementById("newer").onclick = () => page(Math.max(0, offset - PAGE));
  document.getElementById("older").onclick = () => page(offset + PAGE);
  const rows = document.getElementById("rows");
  rows.onclick = (e) => {
    if (e.target.closest("a")) return;
    const tr = e.target.closest("tr[data-id]");
    if (tr) go(`/jobs/${tr.dataset.id}`);
  };
  let shown = "";
  const load = async () => {
    const data = await api(`/v1/runs?${filters}&limit=${PAGE}&offset=${offset}`);
    const html = data.data.map(runRow).join("") || `<tr><td colspan="11" class="muted">No runs${filters.size ? " match" : " yet: submit one (README, quick start)"}.</td></tr>`;
    if (html !== shown) rows.innerHTML = shown = html;
    document.getElementById("count").textContent = `${data.count}`;
    document.getElementById("range").textContent = data.count ? `${offset + 1}–${Math.min(offset + PAGE, data.count)} of ${data.count}` : "";
    document.getElementById("newer").disabled = offset === 0;
    document.getElementById("older").disabled = offset + PAGE >= data.count;
  };
  await load();
  every(gen, 2000, load);
}

function runRow(r) {
  const verdict = r.verdict && r.rerun_of
    ? `<a href="/compare/${esc(r.rerun_of)}/${esc(r.id)}" data-link>${verdictBadge(r.verdict)}</a>${r.diverged_at != null ? ` <span class="muted">step ${r.diverged_at}</span>` : ""}`
    : "";
  return `<tr data-id="${esc(r.id)}" data-status="${esc(r.status)}">
    <td>${badge(r.status)}${r.error_type ? `<div class="muted">${esc(r.error_type)}</div>` : ""}</td>
    <td><a href="/jobs/${esc(r.id)}" data-link>${esc(r.name)}</a>${r.project ? ` <a class="muted" data-role="project" href="/?project=${enc(r.project)}" data-link title="runs of this project">${esc(r.project)}</a>` : ""}<div class="muted mono">${short(r.id)}</div></td>
    <td>${r.tags.map((t) => `<a class="tag" href="/?tag=${enc(t)}" data-link title="runs with this tag">${esc(t)}</a>`).join("")}</td>
    <td class="mono">${r.seed ?? ""}</td><td>${esc(r.policy)}</td><td>${esc(r.queue)}</td>
    <td>${when(r.created_at)}</td><td>${secs(r.duration_s)}</td>
    <td>${metrics(r.metrics)}</td><td>${verdict}</td>
    <td>${r.rerun_of ? `<a href="/jobs/${esc(r.rerun_of)}" data-link class="mono">${short(r.rerun_of)}</a>` : ""}</td></tr>`;
}

// ---- charts ---------------------------------------------------------------------------------
// One chart per metric, one series per run. Long traces come downsampled from the server; a zoom
// (drag across the chart) asks for the exact values of that range; a double click zooms out.

// tick labels that stay distinct for tiny differences (uPlot's default prints 1e-5 as "-0")
function axisNum(v) {
  if (v == null) return "";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(1) : String(+v.toPrecision(4));
}

function markerPlugin(step) {
  return {
    hooks: {
      draw: (u) => {
        if (step == null) return;
        const x = Math.round(u.valToPos(step, "x", true));
        const { ctx, bbox } = u;
        ctx.save();
        ctx.strokeStyle = "#cf222e";
        ctx.lineWidth = 2;
        ctx.setLineDash([6, 4]);
        ctx.beginPath();
        ctx.moveTo(x, bbox.top);
        ctx.lineTo(x, bbox.top + bbox.height);
        ctx.stroke();
        ctx.restore();
      },
    },
  };
}

// steps are whole numbers: the step axis ticks at 1, 2, 5, 10, 20, 50, … apart, never 2.5
const STEP_INCRS = Array.from({ length: 16 }, (_, i) => [1, 2, 5].map((m) => m * 10 ** i)).flat();

class MetricChart {
  constructor(parent, name, labels, { marker = null, onZoom = null, color = 0 } = {}) {
    this.el = document.createElement("div");
    this.el.className = "chart";
    this.el.dataset.metric = name;
    if (marker != null) this.el.dataset.markerStep = String(marker);
    this.el.innerHTML = `<div class="title">${esc(name)}${marker != null ? ` <span class="note">dashed line: first differing step ${marker}</span>` : ""}</div><div class="plot"></div><div class="note" data-role="note"></div>`;
    parent.append(this.el);
    this.zoomed = false;
    this.quiet = true; // uPlot sets its scales as it is built: that is not a zoom
    this.onZoom = onZoom;
    const width = Math.max(320, this.el.clientWidth - 14);
    const opts = {
      width,
      height: 220,
      legend: { live: true },
      // a flat series (two identical runs' difference: zero) gets a small range around it, not 0–100
      scales: { x: { time: false }, y: { range: (u, min, max) => (min === max ? [min - (Math.abs(min) / 10 || 1), max + (Math.abs(max) / 10 || 1)] : uPlot.rangeNum(min, max, 0.1, true)) } },
      axes: [{ incrs: STEP_INCRS }, { size: 64, values: (u, splits) => splits.map(axisNum) }],
      // the first run drawn wider, so a second run on top of it leaves it visible where they agree
      series: [{ label: "step" }, ...labels.map((label, i) => ({ label, stroke: COLORS[(i + color) % COLORS.length], width: i === 0 && labels.length > 1 ? 4 : 1.5, spanGaps: true, points: { show: false } }))],
      plugins: [markerPlugin(marker)],
      hooks: { setScale: [(u, key) => key === "x" && this.scaled(u)] },
    };
    this.u = new uPlot(opts, [[], ...labels.map(() => [])], this.el.querySelector(".plot"));
    this.quiet = false;
    this.el.chart = this.u;
    window.reprotrain.charts[name] = this.u;
  }

  scaled(u) {
    if (this.quiet || !this.onZoom) return;
    const { min, max } = u.scales.x;
    const xs = this.full?.[0] || [];
    this.zoomed = xs.length > 0 && (min > xs[0] || max < xs[xs.length - 1]);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onZoom(this.zoomed ? [Math.floor(min), Math.ceil(max)] : null), 200);
  }

  set(data, { note = "", keepScale = false } = {}) {
    if (!keepScale) this.full = data;
    this.quiet = true;
    this.u.setData(data, !keepScale);
    this.quiet = false;
    this.el.querySelector('[data-role="note"]').textContent = note;
  }
}

// columns of several runs' series, joined on step (a run without that step: null)
function join(seriesList, name) {
  const steps = [...new Set(seriesList.flatMap((s) => s.steps))].sort((a, b) => a - b);
  const cols = seriesList.map((s) => {
    const at = new Map(s.steps.map((step, i) => [step, s.metrics[name]?.[i] ?? null]));
    return steps.map((step) => (at.has(step) ? at.get(step) : null));
  });
  return [steps, ...cols];
}

function seriesNote(list) {
  const sampled = list.filter((s) => !s.exact);
  if (!sampled.length) return "";
  return `${sampled.map((s) => s.count).join(" / ")} steps, downsampled (first, last, min, max per bucket); drag to zoom for exact values`;
}

// b − a at every step both runs logged (the divergence is plain here even when the curves overlap)
function difference([steps, a, b]) {
  return [steps, steps.map((_, i) => (a[i] != null && b[i] != null ? b[i] - a[i] : null))];
}

// draws (and redraws) the charts of these runs into `box`; returns a function that refreshes them.
// Two runs: each metric gets a second chart of their difference.
function charts(box, jobs, labels, marker) {
  const made = {};
  let range = null;
  const fetchAll = () => {
    const p = new URLSearchParams({ points: "2000" });
    if (range) p.set("start", range[0]), p.set("end", range[1]);
    if (marker != null) p.set("keep", marker);
    return Promise.all(jobs.map((id) => api(`/v1/jobs/${enc(id)}/series?${p}`)));
  };
  const draw = async (zoomRange) => {
    const list = await fetchAll();
    const names = [...new Set(list.flatMap((s) => Object.keys(s.metrics)))].sort();
    if (!names.length && !Object.keys(made).length) box.innerHTML = `<p class="muted">No per-step metrics logged${FINAL.has(list[0]?.status) ? "" : " yet"}.</p>`;
    else if (box.querySelector("p.muted")) box.innerHTML = "";
    for (const name of names) {
      made[name] ??= {
        main: new MetricChart(box, name, labels, {
          marker,
          onZoom: (r) => {
            range = r;
            draw(true).catch((e) => console.warn("zoom:", e.message)); // the page may be gone
          },
        }),
        diff: jobs.length === 2 ? new MetricChart(box, `${name}: red − blue`, ["difference"], { marker, color: 1 }) : null,
      };
      const { main, diff } = made[name];
      if (main.zoomed && !zoomRange) continue; // live data does not pull a zoomed chart back out
      const data = join(list, name);
      main.set(data, { note: seriesNote(list), keepScale: !!zoomRange && main.zoomed });
      diff?.set(difference(data), { note: "zero where the runs agree" });
    }
    return list;
  };
  return () => draw(false);
}

// ---- one job --------------------------------------------------------------------------------
async function jobPage(gen, id) {
  let job = await api(`/v1/jobs/${enc(id)}`);
  main.innerHTML = `
    <h1 id="head"></h1>
    <div class="row" id="actions">
      <button id="rerun" class="primary">Re-run</button>
      <button id="cancel" class="danger">Cancel</button>
      <button id="delete" class="danger" title="delete this ended job, its logs and the files only it holds">Delete</button>
      <form id="compare-with" class="row">
        <input name="other" list="others" placeholder="compare with job id…" size="36" aria-label="compare with job id">
        <datalist id="others"></datalist><button>Compare</button>
      </form>
    </div>
    <div id="banner"></div>
    <div id="notice" data-role="notice"></div>
    <div id="verdict"></div>
    <div id="error"></div>
    <div id="bisect"></div>
    <h2>Status and timings</h2><div id="timing"></div>
    <h2>Metrics per step</h2><div class="grid" id="charts"></div>
    <div id="against"></div>
    <h2>Logs</h2>
    <div class="tabs"><button data-stream="stdout" class="on">stdout</button><button data-stream="stderr">stderr</button></div>
    <pre class="log" id="log" data-stream="stdout"></pre>
    <h2>Params and spec</h2><div id="params"></div>
    <details><summary>The whole spec (canonical: every default filled in; digest ${esc(job.spec_digest.slice(0, 16))}…)</summary><pre class="json" id="spec"></pre></details>
    <h2>Artifacts</h2><div id="artifacts"><p class="muted">When the job ends.</p></div>
    <h2>Determinism</h2><div id="determinism"><p class="muted">When the job ends.</p></div>
    <h2>Digests</h2><div id="digests"></div>
    <h2>Environment</h2><div id="fingerprint"><p class="muted">When the job ends.</p></div>`;
  document.getElementById("spec").textContent = JSON.stringify(job.spec, null, 2);
  document.getElementById("params").innerHTML = Object.keys(job.spec.params || {}).length ? kvTable(job.spec.params) : `<p class="muted">No params.</p>`;
  // what a button asks the API: a refusal (no live worker of the job's environment, a job that
  // others re-run) is shown where the page's refresh does not redraw it, until the next action
  const act = (fn) => async () => {
    const notice = document.getElementById("notice");
    notice.innerHTML = "";
    try {
      await fn();
    } catch (e) {
      if (e instanceof AuthNeeded) throw e;
      notice.innerHTML = `<div class="error">${esc(e.message)}</div>`;
    }
  };
  document.getElementById("rerun").onclick = act(async () => {
    const next = await api(`/v1/jobs/${enc(id)}/rerun`, { method: "POST" });
    go(`/jobs/${next.id}`);
  });
  document.getElementById("cancel").onclick = act(async () => {
    await api(`/v1/jobs/${enc(id)}/cancel`, { method: "POST" });
    await refresh();
  });
  document.getElementById("delete").onclick = act(async () => {
    if (!confirm(`Delete job ${job.name} (${id.slice(0, 8)}), its logs and the files no other job holds?`)) return;
    await api(`/v1/jobs/${enc(id)}`, { method: "DELETE" });
    go("/");
  });
  document.getElementById("compare-with").onsubmit = (e) => {
    e.preventDefault();
    const other = e.target.other.value.trim();
    if (other) go(`/compare/${enc(id)}/${enc(other)}`);
  };
  api(`/v1/runs?${new URLSearchParams({ name: job.name, limit: "50" })}`).then((r) => {
    document.getElementById("others").innerHTML = r.data
      .filter((o) => o.id !== id)
      .map((o) => `<option value="${esc(o.id)}">${esc(o.name)} · ${esc(o.status)} · ${esc(o.created_at.slice(0, 19))}</option>`)
      .join("");
  }).catch(() => {}); // only suggestions: the page works without them
  const logs = logTail(id);
  const redraw = charts(document.getElementById("charts"), [id], [job.name]);
  let ended = false;
  const refresh = async () => {
    job = await api(`/v1/jobs/${enc(id)}`);
    // while it runs: how many steps it logged, of how many it declared (the trace's count, no entries)
    const progress = job.status === "RUNNING" ? await api(`/v1/jobs/${enc(id)}/trace?since=${2 ** 31}`).catch(() => null) : null;
    renderJob(job, progress);
    await Promise.all([redraw(), logs.poll()]);
    logs.prefer(job.status === "FAILED" || job.status === "TIMED_OUT");
    if (FINAL.has(job.status) && !ended) {
      ended = true;
      await finished(job);
    }
    return !ended;
  };
  await refresh();
  every(gen, 1500, refresh);
}

// "step 40 of 100 (40 %, about 12 s left)" from a running job's trace count and declared total
function progressText(job, p) {
  if (!p) return "";
  if (!p.total) return `${p.count} steps logged`;
  const pct = Math.min(100, Math.floor((100 * p.count) / p.total));
  const elapsed = between(job.started_at, new Date().toISOString());
  const left = p.count && elapsed != null ? (elapsed / p.count) * Math.max(0, p.total - p.count) : null;
  return `step ${p.count} of ${p.total} (${pct} %${left != null ? `, about ${secs(left)} left` : ""})`;
}

function renderJob(job, progress) {
  document.getElementById("head").innerHTML = `${esc(job.name)} ${badge(job.status)}
    <span class="muted mono" title="job id">${esc(job.id)}</span>
    ${job.rerun_of ? `<span class="muted">re-run of <a href="/jobs/${esc(job.rerun_of)}" data-link class="mono">${short(job.rerun_of)}</a></span>` : ""}`;
  document.getElementById("cancel").disabled = FINAL.has(job.status) || job.cancel_requested;
  document.getElementById("delete").disabled = !FINAL.has(job.status);
  const t = job.timing || {};
  const iso = job.isolation;
  document.getElementById("timing").innerHTML = `<table class="kv">
    <tr><td>status</td><td>${badge(job.status)}${job.cancel_requested && !FINAL.has(job.status) ? " cancel requested" : ""} · attempt ${job.attempts}</td></tr>
    <tr><td>created</td><td>${when(job.created_at)}</td></tr>
    <tr><td>queued for</td><td>${secs(between(job.created_at, job.started_at)) || (job.status === "QUEUED" ? "waiting…" : "—")}</td></tr>
    <tr><td>start latency</td><td>${t.start_latency_s != null ? secs(t.start_latency_s) : "—"} <span class="muted">launch → user code running</span></td></tr>
    <tr><td>run time</td><td>${t.user_s != null ? `${secs(t.user_s)} <span class="muted">the job's own code</span>` : job.started_at && !job.finished_at ? `${secs(between(job.started_at, new Date().toISOString()))} so far` : job.started_at ? `— <span class="muted">its code did not finish (see duration)</span>` : "—"}</td></tr>
    <tr><td>duration</td><td>${secs(between(job.started_at, job.finished_at)) || "—"} <span class="muted">started → ended, with the job process's start and record</span></td></tr>
    ${progress ? `<tr><td>progress</td><td data-role="progress">${esc(progressText(job, progress))}</td></tr>` : ""}
    <tr><td>project · tags</td><td>${esc(job.spec.project || "—")} · ${(job.spec.tags || []).map((t) => `<span class="tag">${esc(t)}</span>`).join("") || "—"}</td></tr>
    <tr><td>seed · policy · device · queue</td><td class="mono">${esc(job.spec.seed)} · ${esc(job.spec.determinism?.policy)} · ${esc(job.spec.device)} · ${esc(job.queue)}</td></tr>
    <tr><td>final metrics</td><td>${metrics(job.metrics, 20) || "—"}</td></tr>
    <tr><td>isolation</td><td>${iso ? `${esc(iso.mode)} · network ${esc(iso.network)} · uid ${esc(iso.uid)}${iso.note ? ` <span class="muted">${esc(iso.note)}</span>` : ""}` : "—"}</td></tr>
  </table>`;
  const kinds = Object.keys(job.digests || {}).filter((k) => job.digests[k] != null);
  document.getElementById("digests").innerHTML = kinds.length
    ? `<details><summary>${Object.keys(flatten(job.digests)).length} digests (${esc(kinds.join(", "))})</summary>${kvTable(job.digests)}</details>`
    : `<p class="muted">${FINAL.has(job.status) ? "No result." : "When the job ends."}</p>`;
  document.getElementById("banner").innerHTML = job.integrity_error
    ? `<div class="banner"><b>Integrity error:</b> a stored artifact of this job no longer matches its digest: ${esc(JSON.stringify(job.integrity_error))}</div>` : "";
  const err = job.error;
  document.getElementById("error").innerHTML = err
    ? `<div class="error" data-role="job-error"><b>${esc(err.type)}</b>: ${esc(err.message)}${err.traceback ? `<pre class="mono">${esc(err.traceback.split("\n").slice(-25).join("\n"))}</pre>` : ""}</div>` : "";
  document.getElementById("bisect").innerHTML = job.bisect ? bisectReport(job) : job.preflight
    ? `<p class="muted" data-role="preflight">Pre-flight passed: two copies agreed on ${job.preflight.ops} ops in ${job.preflight.steps} steps (${secs(job.preflight.seconds)}).</p>` : "";
  if (job.verdict && job.rerun_of) {
    document.getElementById("verdict").innerHTML = `<div class="verdict v-${esc(job.verdict.verdict)}">
      ${verdictBadge(job.verdict.verdict)} <span class="words">${esc(headline(job.verdict))}</span>
      <a href="/compare/${esc(job.rerun_of)}/${esc(job.id)}" data-link>side by side with the original →</a></div>`;
  }
}

// a bisect job's report (or a failed pre-flight's): the first differing op and the ops before it
function bisectReport(job) {
  const r = job.bisect, f = r.first;
  const against = r.a && r.b ? `<p>Runs <a href="/jobs/${esc(r.a)}" data-link class="mono">${short(r.a)}</a> and
    <a href="/jobs/${esc(r.b)}" data-link class="mono">${short(r.b)}</a> · <a href="/compare/${esc(r.a)}/${esc(r.b)}" data-link>their comparison →</a></p>` : "";
  const op = (o) => `<tr><td class="mono">#${o.seq}</td><td class="mono">${esc(o.op)}</td><td>${esc(o.phase)}</td>
    <td class="mono">${esc(o.module || o.node || "—")}</td><td class="mono">${esc(o.source || "—")}</td><td class="mono">${esc((o.outputs || []).join(", "))}</td></tr>`;
  return `<div class="verdict v-${r.found === "none" ? "identical" : "diverged"}" data-role="bisect" data-found="${esc(r.found)}">
    <h2>${job.spec.bisect ? "Bisect" : "Pre-flight check"}</h2>
    <span class="words">${esc(r.summary)}</span>${against}
    ${r.environment ? `<p data-role="bisect-environment">Across environments: ${esc(r.environment)}</p>` : ""}
    ${f ? `<table class="kv"><tbody>
      <tr><td>op</td><td class="mono" data-role="bisect-op">${esc(f.op)}</td></tr>
      <tr><td>step · phase</td><td>${esc(r.step)} · ${esc(f.phase)}${f.node ? ` (autograd node ${esc(f.node)})` : ""}</td></tr>
      <tr><td>module</td><td class="mono" data-role="bisect-module">${esc(f.module || "—")}</td></tr>
      <tr><td>source</td><td class="mono">${esc(f.source || "—")}</td></tr>
      <tr><td>inputs</td><td class="mono">${esc((f.inputs || []).join(", ") || "—")}</td></tr>
      ${(r.outputs || []).map((d) => `<tr><td>output ${d.index}</td><td><span class="mono">${esc(d.dtype)}[${d.shape.join(", ")}]</span>: ${d.differing} of ${d.total} elements differ${d.max_abs != null ? `, max abs ${num(d.max_abs)}, max rel ${num(d.max_rel)}` : ""}${d.note ? ` (${esc(d.note)})` : ""}</td></tr>`).join("")}
    </tbody></table>` : ""}
    ${r.before?.length ? `<h3>The ${r.before.length} ops before it, which agreed</h3><table><thead><tr><th>#</th><th>op</th><th>phase</th><th>module</th><th>source</th><th>outputs</th></tr></thead><tbody>${r.before.map(op).join("")}</tbody></table>` : ""}
    <p class="muted">${r.ops_compared} ops in ${r.steps_compared} logged steps agreed before it · ${secs(r.seconds)}</p>
  </div>`;
}

async function finished(job) {
  const [arts, fp] = await Promise.all([
    api(`/v1/jobs/${enc(job.id)}/artifacts`),
    job.status === "QUEUED" || job.status === "CANCELED" && !job.started_at ? null : api(`/v1/jobs/${enc(job.id)}/fingerprint`).catch(() => null),
  ]);
  document.getElementById("artifacts").innerHTML = arts.count
    ? `<table><thead><tr><th>name</th><th>size</th><th>digest</th></tr></thead><tbody>${arts.data
        .map((a) => `<tr><td><a href="/v1/jobs/${enc(job.id)}/artifacts/${a.name.split("/").map(enc).join("/")}" download data-artifact="${esc(a.name)}">${esc(a.name)}</a></td>
          <td>${bytes(a.size)}</td><td class="mono muted">${esc(a.digest.slice(0, 16))}…</td></tr>`).join("")}</tbody></table>`
    : `<p class="muted">No artifacts.</p>`;
  if (!fp || !Object.keys(fp.fingerprint || {}).length) {
    document.getElementById("determinism").innerHTML = document.getElementById("fingerprint").innerHTML = `<p class="muted">No result.</p>`;
  } else {
    const d = fp.determinism;
    const knobs = d ? [...new Set([...Object.keys(d.requested || {}), ...Object.keys(d.effective || {})])] : [];
    document.getElementById("determinism").innerHTML = d
      ? `<p>policy <b>${esc(d.policy)}</b></p><table><thead><tr><th>knob</th><th>requested</th><th>effective (read back from torch)</th></tr></thead><tbody>${knobs
          .map((k) => `<tr><td class="mono">${esc(k)}</td><td class="mono">${show(d.requested?.[k])}</td><td class="mono">${show(d.effective?.[k])}</td></tr>`).join("")}</tbody></table>
        ${fp.nondeterministic_ops.length ? `<h3>Nondeterministic ops</h3><table><tbody>${fp.nondeterministic_ops.map((o) => `<tr><td class="mono">${esc(o.op)}</td><td>${o.count}×</td><td>${esc(o.message)}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">No nondeterministic op reported.</p>`}`
      : `<p class="muted">No determinism record.</p>`;
    document.getElementById("fingerprint").innerHTML = `<p>env digest <span class="mono">${esc(fp.env_digest || "—")}</span></p>
      <details><summary>Fingerprint (${Object.keys(flatten(fp.fingerprint || {})).length} facts)</summary>${kvTable(fp.fingerprint || {})}</details>
      ${Object.keys(fp.inputs || {}).length ? `<details><summary>Inputs</summary>${kvTable(fp.inputs)}</details>` : ""}`;
  }
  if (job.rerun_of && job.verdict) {
    const box = document.getElementById("against");
    box.innerHTML = `<h2>Against its original</h2><div id="against-body"></div>`;
    await renderCompare(document.getElementById("against-body"), job.rerun_of, job.id);
  }
}

const bytes = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

function logTail(id) {
  const pre = document.getElementById("log");
  const text = { stdout: "", stderr: "" };
  const offset = { stdout: 0, stderr: 0 };
  const decoder = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  let shown = "stdout";
  let chosen = false; // a tab the user picked stays
  const select = (stream) => {
    shown = stream;
    for (const o of document.querySelectorAll(".tabs button")) o.classList.toggle("on", o.dataset.stream === stream);
    pre.dataset.stream = shown;
    pre.textContent = text[shown];
    pre.scrollTop = pre.scrollHeight;
  };
  for (const b of document.querySelectorAll(".tabs button")) {
    b.onclick = () => {
      chosen = true;
      select(b.dataset.stream);
    };
  }
  // stderr when the job failed (its traceback is there) or wrote only to stderr, until a tab is picked
  const prefer = (failed) => {
    if (!chosen && shown === "stdout" && text.stderr && (failed || !text.stdout)) select("stderr");
  };
  const read = async (stream) => {
    const r = await request(`/v1/jobs/${enc(id)}/logs?stream=${stream}&offset=${offset[stream]}`);
    const buf = await r.arrayBuffer();
    if (!buf.byteLength) return;
    offset[stream] += buf.byteLength;
    text[stream] = (text[stream] + decoder[stream].decode(buf, { stream: true })).slice(-LOG_KEEP);
    if (stream === shown) {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = text[stream];
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  };
  return { poll: () => Promise.all([read("stdout"), read("stderr")]), prefer };
}

// ---- two jobs -------------------------------------------------------------------------------
function headline(v) {
  const d = v.divergence || {};
  switch (v.verdict) {
    case "identical":
      return "Bit-identical: every digest of the two runs is equal.";
    case "results_identical":
      return `Every result is bit-identical; only incidental outputs differ (${(v.incidental || []).length}).`;
    case "metrics_identical":
      return "The per-step metrics are identical, but other results differ.";
    case "diverged":
      if (d.step != null) return `Diverged at step ${d.step}, the first step whose ${(d.differs || []).join(", ") || "entry"} differ.`;
      if (d.file) return `Diverged: the first differing file is ${d.file}.`;
      return `Diverged: ${(d.differs || []).join(", ") || "results differ"}.`;
    default:
      return `Not comparable: ${v.reason || "a run did not succeed"}.`;
  }
}

function findings(v) {
  const out = [];
  const d = v.divergence || {};
  if (v.identical?.length) out.push(`Identical: ${v.identical.join(", ")}.`);
  if (v.absent?.length) out.push(`Neither run has: ${v.absent.join(", ")} (not tracked or not produced; not counted as equal).`);
  if (d.first) out.push(`What parted first: ${d.first}.`);
  for (const [name, m] of Object.entries(d.metrics || {}))
    out.push(`Metric ${name} at step ${d.step}: ${nums(m.a, m.b)}${m.abs != null ? ` (abs ${num(m.abs)}${m.rel != null ? `, rel ${num(m.rel)}` : ""})` : ""}.`);
  if (d.tensor) out.push(`First differing tensor: ${d.tensor}${d.tensor_step != null ? ` at step ${d.tensor_step}` : ""}${d.tensor_file ? ` in ${d.tensor_file}` : ""}${d.tensor_max_abs != null ? ` (max abs ${num(d.tensor_max_abs)})` : ""}.`);
  if (d.file) out.push(`First differing file: ${d.file}${d.max_abs != null ? ` (max abs ${num(d.max_abs)})` : ""}.`);
  if (d.note) out.push(d.note);
  for (const l of v.lines || [])
    out.push(`First differing ${l.stream} line ${l.line}${l.noise ? " (only in noise: times, durations)" : ""}: “${l.a ?? "(ended)"}” vs “${l.b ?? "(ended)"}”.`);
  for (const i of v.incidental || []) out.push(`Incidental: ${i.what} ${i.state.replace("_", " ")} (${i.reason}).`);
  if (v.likely_causes?.length) out.push(`Likely causes: ${v.likely_causes.join("; ")}.`);
  if (v.nondeterministic_ops?.length) out.push(`Nondeterministic ops: ${v.nondeterministic_ops.join(", ")}.`);
  for (const n of v.notes || []) out.push(n);
  return out;
}

async function comparePage(gen, a, b) {
  main.innerHTML = `<h1>Compare <a href="/jobs/${esc(a)}" data-link class="mono">${short(a)}</a> (blue) with
    <a href="/jobs/${esc(b)}" data-link class="mono">${short(b)}</a> (red)</h1><div id="cmp"></div>`;
  await renderCompare(document.getElementById("cmp"), a, b);
}

async function renderCompare(box, a, b) {
  const [v, ja, jb, bisects] = await Promise.all([
    api(`/v1/jobs/${enc(a)}/compare/${enc(b)}`),
    api(`/v1/jobs/${enc(a)}`),
    api(`/v1/jobs/${enc(b)}`),
    api(`/v1/jobs?tag=bisect&limit=50`).catch(() => null), // only to link one made before
  ]);
  // the newest bisect of these two runs (across environments, its side b, which has the report)
  const earlier = (bisects?.data || []).find((j) => j.spec?.bisect?.a === ja.id && j.spec?.bisect?.b === jb.id && j.spec.bisect.side !== "a");
  const d = v.divergence || {};
  const marker = d.step ?? d.tensor_step ?? null;
  // a re-run against its original, or any two jobs: the columns say which
  const rerun = jb.rerun_of === ja.id;
  const cols = rerun ? ["original", "re-run"] : [`a ${ja.id.slice(0, 8)}`, `b ${jb.id.slice(0, 8)}`];
  const isCode = (c) => c.key === "code" || c.key.startsWith("code/");
  const env = (v.causes || []).filter((c) => !c.key.startsWith("spec.") && !isCode(c));
  const code = (v.causes || []).filter(isCode);
  const sa = flatten(ja.spec), sb = flatten(jb.spec);
  const specKeys = [...new Set([...Object.keys(sa), ...Object.keys(sb)])].sort()
    .filter((k) => JSON.stringify(sa[k]) !== JSON.stringify(sb[k]));
  const likely = new Set((v.causes || []).filter((c) => c.likely_cause).map((c) => c.key));
  box.innerHTML = `
    <div class="verdict v-${esc(v.verdict)}" data-role="verdict" data-verdict="${esc(v.verdict)}">
      ${verdictBadge(v.verdict)} <span class="words">${esc(headline(v))}</span>
      ${ja.id === jb.id ? `<p class="muted">Both sides are the same job.</p>` : rerun ? "" : `<p class="muted">Two jobs, neither a re-run of the other: a is the first, b the second.</p>`}
      <ul>${findings(v).map((f) => `<li>${esc(f)}</li>`).join("")}</ul>
      ${earlier ? `<p data-role="bisect-made"><a href="/jobs/${esc(earlier.id)}" data-link>The bisect of these runs</a> (${esc(earlier.status.toLowerCase())}).</p>` : ""}
      ${v.bisect ? `<button data-role="bisect" class="${earlier ? "" : "primary"}" title="run a's spec as two copies recorded op by op up to step ${esc(d.step)}">${earlier ? "Bisect again" : "Find the first differing op (bisect)"}</button>` : ""}
    </div>
    <h2>Metrics per step: both runs</h2><div class="grid wide" data-role="compare-charts"></div>
    <h2>Results and files</h2>${filesTable(v)}
    <h2>Environment: what differs</h2>${env.length ? causesTable(env, cols) : `<p class="muted">The fingerprints agree on everything that can change result bits.</p>`}
    ${code.length ? `<h2>Code: the files that differ</h2>${causesTable(code, cols)}` : ""}
    <h2>Spec: what differs</h2>${specKeys.length ? `<table><thead><tr><th>key</th><th>${esc(cols[0])}</th><th>${esc(cols[1])}</th></tr></thead><tbody>${specKeys
      .map((k) => `<tr class="${likely.has(`spec.${k}`) || [...likely].some((l) => l.startsWith(`spec.${k.split(".")[0]}`)) ? "likely" : ""}"><td class="mono">${esc(k)}</td><td class="mono">${show(sa[k])}</td><td class="mono">${show(sb[k])}</td></tr>`).join("")}</tbody></table>` : `<p class="muted">The specs are the same.</p>`}`;
  const bisect = box.querySelector('button[data-role="bisect"]');
  if (bisect) bisect.onclick = async () => {
    bisect.disabled = true;
    const job = await api(v.bisect, { method: "POST" });
    go(`/jobs/${job.id}`);
  };
  const refresh = charts(box.querySelector('[data-role="compare-charts"]'), [a, b], [`${ja.name} ${a.slice(0, 8)}`, `${jb.name} ${b.slice(0, 8)}`], marker);
  await refresh();
}

function filesTable(v) {
  const files = Object.entries(v.files || {});
  const equal = Object.entries(v.equal || {});
  if (!files.length && !equal.length) return `<p class="muted">Nothing to compare file by file.</p>`;
  return `<table data-role="files"><thead><tr><th>what</th><th>state</th></tr></thead><tbody>
    ${equal.map(([k, same]) => `<tr><td>${esc(k)}</td><td class="st-${same ? "same" : "differs"}">${same ? "same" : "differs"}</td></tr>`).join("")}
    ${files.map(([name, st]) => `<tr><td class="mono">${esc(name)}</td><td class="st-${esc(st)}">${esc(st.replace("_", " "))}</td></tr>`).join("")}
  </tbody></table>`;
}

function causesTable(causes, cols) {
  const sorted = [...causes].sort((x, y) => Number(y.likely_cause) - Number(x.likely_cause));
  return `<table data-role="causes"><thead><tr><th>fact</th><th>what it is</th><th>${esc(cols[0])}</th><th>${esc(cols[1])}</th></tr></thead><tbody>${sorted
    .map((c) => `<tr class="${c.likely_cause ? "likely" : ""}"><td class="mono">${esc(c.key)}</td><td>${esc(c.label)}${c.likely_cause ? " <b>(likely changes result bits)</b>" : ""}</td><td class="mono">${show(c.a)}</td><td class="mono">${show(c.b)}</td></tr>`).join("")}</tbody></table>`;
}

route();
