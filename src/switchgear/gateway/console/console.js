/*
 * Switchgear console: the shell (sign-in, nav, hash router, refresh loop, window selector) and
 * the helpers every page uses. No framework, no build step, no network beyond this gateway.
 *
 * PAGE-MODULE API (pages/<name>.js, an ES module):
 *
 *   export const title = "Routing";          // nav label and the page's <h1>
 *   export const roles = ["admin", "operator", "viewer"];  // optional: who may open it; any
 *                                             // other role gets the 403 page without an API call
 *   export const refresh = 15;                // optional: seconds between renders (default 15;
 *                                             // 0 = render only on arrival/ctx.refresh())
 *   export async function render(root, ctx) { ... }  // fill `root`, an empty <div>
 *
 * The shell renders into a fresh <div> and swaps it in when render() resolves. If render()
 * throws an ApiError: 401 -> sign-in, 403 -> "403: a <role> key cannot see this", anything else
 * -> an error box above the previous content.
 *
 * ctx = {
 *   api(path, {method, query, body, signal}) -> parsed JSON; throws ApiError {status, type,
 *       code, param, message}; a 401 also signs out. `query` and `body` are plain objects.
 *   window:   {name: "1h", seconds: 3600, bucket_s: 60, since()}  (15m/1h/6h/24h/7d)
 *   identity: {open, role, tenant, name, prefix, id}  (GET /admin/whoami)
 *   params:   the hash route's query (#/requests?id=abc -> {id: "abc"})
 *   state:    an object per page that survives refreshes (filters, form input)
 *   navigate(hash), refresh(), signal (aborted when the page is left),
 *   helpers:  {el, svg, table, lineChart, stat, section, errorBox, meter, badge, choice, fmt}
 * }
 * helpers.el(tag, attrs, ...children): attributes by setAttribute (`on: {click: fn}` for
 * events), children as TEXT nodes or Nodes -- never HTML. The rest is described beside each
 * function below and in the project's docs.
 *
 * DOM hooks for tests: form#signin, input#key, #signin-error, #whoami, a[data-page=<name>],
 * button#signout, select#window, button#pause, #updated, main#page[data-page][data-state=
 * loading|ready|error|forbidden], .forbidden, [data-stat][data-value], td[data-col][data-value].
 */

export const PAGES = ["overview", "slo", "cost", "routing", "requests", "batches", "governance", "scorecard"];
const NAV_LABELS = { overview: "Overview", slo: "SLOs", cost: "Cost", routing: "Routing", requests: "Requests",
  batches: "Batches", governance: "Governance", scorecard: "Scorecard" };
/** The window selector's choices: seconds and the chart bucket that suits them. */
export const WINDOWS = {
  "15m": { seconds: 900, bucket_s: 30 },
  "1h": { seconds: 3600, bucket_s: 60 },
  "6h": { seconds: 21600, bucket_s: 300 },
  "24h": { seconds: 86400, bucket_s: 900 },
  "7d": { seconds: 604800, bucket_s: 3600 },
};
const KEY_ITEM = "switchgear.console.key";
const WINDOW_ITEM = "switchgear.console.window";
const DEFAULT_REFRESH_S = 15;
/** A page is never re-rendered sooner than this many times its last render took. */
const SLOW_FACTOR = 5;
const SVG_NS = "http://www.w3.org/2000/svg";

/** An error answer of the API, in OpenAI's shape. */
export class ApiError extends Error {
  constructor(status, message, type = null, code = null, param = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
  }
}

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else if (value !== false && value !== null && value !== undefined) {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element; strings become text nodes, never markup. */
export function el(tag, attrs, ...children) {
  const element = build(document.createElement(tag), attrs, children);
  if (tag === "input" && attrs && "value" in attrs && attrs.value != null) element.value = attrs.value;
  return element;
}

/** An SVG element, as el() does. */
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

const numberFormats = new Map();
function formatter(digits, fixed = false) {
  const name = `${digits}${fixed ? "f" : ""}`;
  if (!numberFormats.has(name)) {
    numberFormats.set(name, new Intl.NumberFormat("en-US",
      { maximumFractionDigits: digits, minimumFractionDigits: fixed ? digits : 0 }));
  }
  return numberFormats.get(name);
}
const missing = (x) => x === null || x === undefined || Number.isNaN(x);
const pad = (n) => String(n).padStart(2, "0");

/** Number, money, latency, percentage, rate and time formatting ("—" for a missing value). */
export const fmt = {
  number: (x, digits = 2) => (missing(x) ? "—" : formatter(digits).format(x)),
  int: (x) => (missing(x) ? "—" : formatter(0).format(Math.round(x))),
  money(x, currency = "USD") {
    if (missing(x)) return "—";
    const size = Math.abs(x);
    const digits = size === 0 || size >= 1 ? 2 : size >= 0.01 ? 4 : 6;
    const sign = currency === "USD" ? "$" : "";
    const text = formatter(digits, digits === 2).format(x);
    return sign ? (x < 0 ? `-${sign}${text.slice(1)}` : `${sign}${text}`) : `${text} ${currency}`;
  },
  ms(seconds) {
    if (missing(seconds)) return "—";
    if (Math.abs(seconds) >= 1) return `${formatter(2).format(seconds)} s`;
    return `${formatter(seconds * 1000 >= 100 ? 0 : 1).format(seconds * 1000)} ms`;
  },
  percent: (fraction, digits = 1) => (missing(fraction) ? "—" : `${formatter(digits).format(fraction * 100)}%`),
  rate(perSecond) {
    // A quiet hour must not read "0/s": below 0.1/s the rate is per minute, below 1/min per hour.
    if (missing(perSecond)) return "—";
    if (perSecond === 0 || perSecond >= 0.1) return `${formatter(perSecond >= 10 ? 0 : 2).format(perSecond)}/s`;
    if (perSecond >= 1 / 60) return `${formatter(2).format(perSecond * 60)}/min`;
    return `${formatter(2).format(perSecond * 3600)}/h`;
  },
  time(epoch) {
    if (missing(epoch)) return "—";
    const d = new Date(epoch * 1000);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  },
  dateTime(epoch) {
    if (missing(epoch)) return "—";
    return `${new Date(epoch * 1000).toISOString().slice(0, 19).replace("T", " ")} UTC`;
  },
  ago(epoch) {
    if (missing(epoch)) return "—";
    const s = Math.max(0, Date.now() / 1000 - epoch);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  },
};

/** A <section> with its <h2>. */
export function section(title, ...children) {
  return el("section", { class: "panel" }, el("h2", {}, title), ...children);
}

/** A figure tile: `data-stat` names it, `data-value` holds the raw value for tests. */
export function stat(name, label, value, text) {
  return el("div", { class: "stat", "data-stat": name, "data-value": missing(value) ? "" : value },
    el("span", { class: "stat-label" }, label),
    el("span", { class: "stat-value" }, text === undefined ? fmt.number(value) : text));
}

/** An error shown in place: the API's message and status. */
export function errorBox(error) {
  const status = error instanceof ApiError ? `${error.status}: ` : "";
  return el("div", { class: "error", role: "alert" }, status + (error.message || String(error)));
}

/**
 * A data table. columns: [{key, label, format?(value, row) -> string|Node, numeric?}];
 * options: {empty, onRowClick(row), rowAttrs(row) -> attrs}.
 */
export function table(columns, rows, options = {}) {
  if (!rows || rows.length === 0) {
    return el("p", { class: "empty" }, options.empty || "Nothing in this window.");
  }
  const head = el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.numeric ? "num" : null, scope: "col" }, c.label))));
  const body = el("tbody", {}, rows.map((row, index) => {
    const attrs = { "data-row": index, ...(options.rowAttrs ? options.rowAttrs(row) : {}) };
    if (options.onRowClick) {
      attrs.class = `${attrs.class || ""} clickable`.trim();
      attrs.tabindex = 0;
      attrs.on = { click: () => options.onRowClick(row), keydown: (e) => e.key === "Enter" && options.onRowClick(row) };
    }
    return el("tr", attrs, columns.map((c) => {
      const value = row[c.key];
      const shown = c.format ? c.format(value, row) : missing(value) ? "—" : typeof value === "number" ? fmt.number(value) : String(value);
      return el("td", {
        "data-col": c.key,
        "data-value": typeof value === "number" ? value : null,
        class: c.numeric ? "num" : null,
      }, shown);
    }));
  }));
  return el("div", { class: "table-wrap" }, el("table", { class: "data" }, head, body));
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * magnitude) return step * magnitude;
  return 10 * magnitude;
}

/**
 * A line chart as SVG: series [{name, points: [[epochSeconds, y | null], ...]}] (null: a gap);
 * options {title, yFormat, width (640), height (180)}: the SVG scales to its box, so a chart
 * across a whole page wants a larger width. The y axis starts at 0.
 */
export function lineChart(series, options = {}) {
  const width = options.width || 640;
  const height = options.height || 180;
  const left = 64, right = 8, top = 10, bottom = 24;
  const yFormat = options.yFormat || ((y) => fmt.number(y));
  const points = series.flatMap((s) => s.points.filter((p) => !missing(p[1])));
  const figure = el("figure", { class: "chart" }, options.title ? el("figcaption", {}, options.title) : null);
  if (points.length === 0) {
    figure.append(el("p", { class: "empty" }, "No data in this window."));
    return figure;
  }
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const yMax = niceMax(Math.max(...points.map((p) => p[1])));
  const sx = (x) => left + (x1 === x0 ? (width - left - right) / 2 : ((x - x0) / (x1 - x0)) * (width - left - right));
  const sy = (y) => top + (1 - y / yMax) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img", "aria-label": options.title || "chart" });
  for (let i = 0; i <= 4; i += 1) {
    const y = (yMax * i) / 4;
    chart.append(svg("line", { x1: left, x2: width - right, y1: sy(y), y2: sy(y), class: "grid" }),
      svg("text", { x: left - 6, y: sy(y) + 4, class: "axis", "text-anchor": "end" }, yFormat(y)));
  }
  const span = x1 - x0;
  const ticks = x1 === x0 ? [x0] : [0, 0.25, 0.5, 0.75, 1].map((f) => x0 + f * span);
  ticks.forEach((x, index) => {
    const label = span > 86400 ? fmt.dateTime(x).slice(5, 16) : fmt.time(x).slice(0, span > 600 ? 5 : 8);
    const anchor = ticks.length === 1 ? "middle" : index === 0 ? "start" : index === ticks.length - 1 ? "end" : "middle";
    chart.append(svg("text", { x: sx(x), y: height - 6, class: "axis", "text-anchor": anchor }, label));
  });
  series.forEach((s, index) => {
    let d = "";
    let gap = true;
    for (const [x, y] of s.points) {
      if (missing(y)) { gap = true; continue; }
      d += `${gap ? "M" : "L"}${sx(x).toFixed(1)} ${sy(y).toFixed(1)} `;
      gap = false;
    }
    chart.append(svg("path", { d: d.trim(), class: `line s${index % 8}`, "data-series": s.name }));
    if (s.points.length <= 240) {
      for (const [x, y] of s.points) {
        if (missing(y)) continue;
        chart.append(svg("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: 2.2, class: `dot s${index % 8}` },
          svg("title", {}, `${s.name} ${fmt.time(x)}: ${yFormat(y)}`)));
      }
    }
  });
  figure.append(chart, el("ul", { class: "legend" }, series.map((s, index) =>
    el("li", {}, el("span", { class: `swatch s${index % 8}` }), s.name))));
  return figure;
}

/** A horizontal bar for a share from 0 to 1 (clamped), `good` / `warn` / `bad` by class. */
export function meter(fraction, kind = "good") {
  const width = Math.max(0, Math.min(1, Number(fraction) || 0)) * 100;
  return svg("svg", { class: `meter ${kind}`, viewBox: "0 0 100 8", preserveAspectRatio: "none", role: "img",
    "aria-label": fmt.percent(fraction) },
  svg("rect", { class: "meter-track", x: 0, y: 0, width: 100, height: 8, rx: 4 }),
  svg("rect", { class: "meter-fill", x: 0, y: 0, width: width.toFixed(2), height: 8, rx: 4 }));
}

/** A small coloured label (kind: good, warn, bad). */
export function badge(text, kind = "good") {
  return el("span", { class: `badge ${kind}` }, text);
}

/** A labelled <select> of `choices` ([value, label] pairs) that calls onChange(value). */
export function choice(label, name, choices, value, onChange) {
  const select = el("select", { name, on: { change: () => onChange(select.value) } },
    choices.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  return el("label", { class: "choice" }, label, select);
}

export const helpers = { el, svg, table, lineChart, stat, section, errorBox, meter, badge, choice, fmt };

function parseHash(hash) {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const name = PAGES.includes(path) ? path : PAGES[0];
  return { name, params: Object.fromEntries(new URLSearchParams(query)) };
}

/** The shell: one per browser tab, holding the key, the current page and its refresh timer. */
class Console {
  constructor() {
    this.key = sessionStorage.getItem(KEY_ITEM);
    this.identity = null;
    this.modules = new Map();
    this.pageState = new Map();
    this.paused = false;
    this.generation = 0;
    this.timer = null;
    this.controller = null;
    this.windowName = WINDOWS[sessionStorage.getItem(WINDOW_ITEM)] ? sessionStorage.getItem(WINDOW_ITEM) : "1h";
    this.nodes = Object.fromEntries(["top", "nav", "window", "pause", "updated", "whoami", "signout",
      "signin-view", "signin", "key", "signin-error", "page"].map((id) => [id, document.getElementById(id)]));
  }

  async start() {
    const n = this.nodes;
    n.nav.replaceChildren(...PAGES.map((name) => el("a", { href: `#/${name}`, "data-page": name }, NAV_LABELS[name])));
    n.window.value = this.windowName;
    n.window.addEventListener("change", () => {
      this.windowName = n.window.value;
      sessionStorage.setItem(WINDOW_ITEM, this.windowName);
      this.show();
    });
    n.pause.addEventListener("click", () => this.setPaused(!this.paused));
    n.signout.addEventListener("click", () => this.signOut());
    n.signin.addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn(n.key.value.trim());
    });
    window.addEventListener("hashchange", () => this.identity && this.show());
    const hadKey = Boolean(this.key);
    try {
      this.identity = await this.whoami();
    } catch (error) {
      // With no key yet, the gateway's 401 is the reason to sign in, not an error to show.
      this.showSignIn(hadKey || !(error instanceof ApiError && error.status === 401) ? error.message : null);
      return;
    }
    this.enter();
  }

  /** Who the key is (or open mode); a 401 signs out. */
  async whoami() {
    return this.api("/admin/whoami");
  }

  async signIn(key) {
    if (!key) return;
    this.key = key;
    try {
      this.identity = await this.whoami();
    } catch (error) {
      this.key = null;
      this.showSignIn(error.message);
      return;
    }
    sessionStorage.setItem(KEY_ITEM, key);
    this.nodes.key.value = "";
    this.enter();
  }

  signOut(message) {
    sessionStorage.removeItem(KEY_ITEM);
    this.key = null;
    this.identity = null;
    this.leave();
    this.showSignIn(message);
  }

  showSignIn(message) {
    const n = this.nodes;
    n.top.hidden = true;
    n.page.hidden = true;
    n.page.replaceChildren();
    n["signin-view"].hidden = false;
    n["signin-error"].hidden = !message;
    n["signin-error"].textContent = message || "";
    n.key.focus();
  }

  enter() {
    const n = this.nodes;
    const who = this.identity;
    n["signin-view"].hidden = true;
    n.top.hidden = false;
    n.page.hidden = false;
    n.signout.hidden = who.open;
    n.whoami.textContent = who.open ? "open mode (no keys)"
      : [who.role, who.tenant && `tenant ${who.tenant}`, who.name].filter(Boolean).join(" · ");
    this.show();
  }

  leave() {
    this.generation += 1;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
  }

  setPaused(paused) {
    this.paused = paused;
    this.nodes.pause.textContent = paused ? "Resume" : "Pause";
    this.nodes.pause.setAttribute("aria-pressed", String(paused));
    clearTimeout(this.timer);
    if (!paused && this.current) this.schedule(this.generation);
  }

  /** Fetch an admin path with the key; the parsed answer, or an ApiError. */
  async api(path, { method = "GET", query, body, signal } = {}) {
    const url = new URL(path, window.location.origin);
    if (url.origin !== window.location.origin) throw new Error(`not this gateway's path: ${path}`);  // the key stays here
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
    }
    const headers = { Accept: "application/json" };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    const init = { method, headers, signal, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = text;
    if ((response.headers.get("content-type") || "").includes("json")) {
      try { data = JSON.parse(text); } catch { data = text; }
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      const failure = new ApiError(response.status, error.message || `${response.status} ${response.statusText}`,
        error.type, error.code, error.param);
      if (response.status === 401) this.signOut(failure.message);
      throw failure;
    }
    return data;
  }

  async page(name) {
    if (!this.modules.has(name)) this.modules.set(name, import(`./pages/${name}.js`));
    return this.modules.get(name);
  }

  /** Show the page the hash names, from scratch. */
  async show() {
    this.leave();
    const generation = this.generation;
    const { name, params } = parseHash(window.location.hash);
    const main = this.nodes.page;
    for (const link of this.nodes.nav.querySelectorAll("a")) {
      if (link.dataset.page === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    main.dataset.page = name;
    main.dataset.state = "loading";
    main.replaceChildren(el("p", { class: "loading" }, "Loading…"));
    let module;
    try {
      module = await this.page(name);
    } catch (error) {
      this.modules.delete(name);
      main.replaceChildren(el("h1", {}, name), errorBox(new Error(`The ${name} page could not be loaded: ${error.message}`)));
      main.dataset.state = "error";
      return;
    }
    if (generation !== this.generation) return;
    this.current = { name, params, module };
    const who = this.identity;
    if (module.roles && !who.open && !module.roles.includes(who.role)) {
      this.forbidden(module, null);
      return;
    }
    await this.render(generation);
  }

  context(generation) {
    const { name, params } = this.current;
    if (!this.pageState.has(name)) this.pageState.set(name, {});
    const chosen = WINDOWS[this.windowName];
    this.controller = new AbortController();
    const signal = this.controller.signal;
    return {
      api: (path, options = {}) => this.api(path, { signal, ...options }),
      window: { name: this.windowName, ...chosen, since: () => Date.now() / 1000 - chosen.seconds },
      identity: this.identity,
      params,
      state: this.pageState.get(name),
      navigate: (hash) => { window.location.hash = hash; },
      refresh: () => { if (generation === this.generation) { this.leave(); this.render(this.generation); } },
      signal,
      helpers,
    };
  }

  async render(generation) {
    const { module } = this.current;
    const main = this.nodes.page;
    const root = el("div", { class: "page-body" });
    const started = performance.now();
    try {
      await module.render(root, this.context(generation));
    } catch (error) {
      if (generation !== this.generation || error.name === "AbortError") return;
      if (error instanceof ApiError && error.status === 401) return;  // api() signed out
      if (error instanceof ApiError && error.status === 403) {
        this.forbidden(module, error);
        return;
      }
      main.querySelector(":scope > .error")?.remove();
      const heading = main.querySelector(":scope > h1");
      const box = errorBox(error);
      if (heading) heading.after(box);
      else main.replaceChildren(el("h1", {}, module.title), box);
      main.dataset.state = "error";
      this.schedule(generation, (performance.now() - started) / 1000);
      return;
    }
    if (generation !== this.generation) return;
    main.replaceChildren(el("h1", {}, module.title), root);
    main.dataset.state = "ready";
    const took = (performance.now() - started) / 1000;
    const next = this.schedule(generation, took);
    this.nodes.updated.textContent = `updated ${fmt.time(Date.now() / 1000)}` +
      (took >= 1 ? ` (took ${fmt.number(took, 1)} s${next ? `; next in ${Math.round(next)} s` : ""})` : "");
  }

  /**
   * Render again after the page's refresh interval, or SLOW_FACTOR times as long as the last
   * render took if that is longer (a big window on a big log keeps the store busy for seconds);
   * the delay in seconds, or null when nothing is scheduled.
   */
  schedule(generation, took = 0) {
    const interval = this.current.module.refresh ?? DEFAULT_REFRESH_S;
    clearTimeout(this.timer);
    if (this.paused || !(interval > 0) || generation !== this.generation) return null;
    const seconds = Math.max(interval, SLOW_FACTOR * took);
    this.timer = setTimeout(() => {
      if (generation !== this.generation) return;
      // A hidden tab asks nothing of the gateway; it renders again once shown.
      if (document.hidden) this.schedule(generation, took);
      else this.render(generation);
    }, seconds * 1000);
    return seconds;
  }

  forbidden(module, error) {
    const main = this.nodes.page;
    const role = this.identity.role || "anonymous";
    main.replaceChildren(el("h1", {}, module.title), el("div", { class: "forbidden", role: "alert" },
      el("p", { class: "big" }, `403: a ${role} key cannot see this`),
      error ? el("p", {}, error.message) : null));
    main.dataset.state = "forbidden";
  }
}

if (typeof document !== "undefined" && document.getElementById("page")) {
  new Console().start();
}
