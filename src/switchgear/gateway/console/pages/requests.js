/*
 * Requests: the request log with filters (time, tenant, key, model, status, cache, guard action),
 * a page at a time (GET /admin/records; "Older" follows the API's keyset token), and one
 * request's whole record (#/requests?id=<request id>: GET /admin/records/{id}), its prompt and
 * answer only where the content log stored them. The filters live in ctx.state; the page does
 * not re-render by itself while a filter is being typed ("Follow" re-reads the newest page).
 */

export const title = "Requests";
export const roles = ["admin", "operator", "viewer"];
export const refresh = 0;

const FOLLOW_S = 10;
const STATUS_BADGE = (status) => (status < 400 ? "good" : status < 500 ? "warn" : "bad");
const FILTERS = ["since", "until", "tenant", "key", "model", "status", "cache", "guard", "limit"];

export async function render(root, ctx) {
  if (ctx.params.id) {
    await detail(root, ctx, ctx.params.id);
    return;
  }
  await list(root, ctx);
}

async function list(root, ctx) {
  const { el, section, table, errorBox, fmt } = ctx.helpers;
  const state = ctx.state;
  state.filters = state.filters || { limit: "100" };
  state.pages = state.pages || [];  // the `after` tokens of the pages before this one
  const filters = state.filters;
  const query = { ...filters, after: state.pages[state.pages.length - 1] };
  if (!filters.since && !filters.until) query.since = Math.floor(ctx.window.since());

  root.append(filterForm(ctx));
  let answer;
  try {
    answer = await ctx.api("/admin/records", { query });
  } catch (error) {
    if (error.status !== 400) throw error;
    root.append(errorBox(error));  // a filter the API refused: keep the form to fix it
    return;
  }
  const columns = [
    { key: "received_at", label: "Received", format: (v) => fmt.dateTime(v) },
    { key: "request_id", label: "Request" },
    { key: "tenant", label: "Tenant" },
    { key: "key_id", label: "Key", format: (v) => v || "—" },
    { key: "model", label: "Model" },
    { key: "deployment", label: "Deployment", format: (v) => v || "—" },
    { key: "status", label: "Status", numeric: true,
      format: (v, row) => el("span", { class: `badge ${STATUS_BADGE(v)}`, title: row.error_type || "" }, String(v)) },
    { key: "cache_status", label: "Cache", format: (v) => v || "—" },
    { key: "guard_action", label: "Guard", format: (v) => v || "—" },
    { key: "e2e_s", label: "Latency", numeric: true, format: (v) => fmt.ms(v) },
    { key: "ttft_s", label: "TTFT", numeric: true, format: (v) => fmt.ms(v) },
    { key: "prompt_tokens", label: "In", numeric: true, format: fmt.int },
    { key: "completion_tokens", label: "Out", numeric: true, format: fmt.int },
    { key: "cost", label: "Cost", numeric: true, format: (v) => fmt.money(v) },
  ];
  const range = query.since && !filters.since ? `the last ${ctx.window.name}` : "the chosen times";
  root.append(section("Request log",
    el("p", { class: "note" }, `Newest first, from ${range}; page ${state.pages.length + 1}. Click a row for its whole record.`),
    table(columns, answer.data, {
      empty: "No request matches these filters.",
      onRowClick: (row) => ctx.navigate(`#/requests?id=${encodeURIComponent(row.request_id)}`),
      rowAttrs: (row) => ({ "data-request-id": row.request_id }),
    }),
    el("div", { class: "toolbar" },
      el("button", { type: "button", id: "records-newest", disabled: state.pages.length === 0,
        on: { click: () => { state.pages = []; ctx.refresh(); } } }, "Newest"),
      el("button", { type: "button", id: "records-newer", disabled: state.pages.length === 0,
        on: { click: () => { state.pages.pop(); ctx.refresh(); } } }, "← Newer"),
      el("button", { type: "button", id: "records-older", disabled: !answer.next,
        on: { click: () => { state.pages.push(answer.next); ctx.refresh(); } } }, "Older →"),
      followBox(ctx))));
}

/** "Follow": re-read the newest page every FOLLOW_S seconds while this page is shown. */
function followBox(ctx) {
  const { el } = ctx.helpers;
  const state = ctx.state;
  if (state.follow && state.pages.length === 0) {
    const timer = setTimeout(() => ctx.refresh(), FOLLOW_S * 1000);
    ctx.signal.addEventListener("abort", () => clearTimeout(timer));
  }
  const box = el("input", { type: "checkbox", id: "records-follow", checked: Boolean(state.follow),
    on: { change: (event) => { state.follow = event.target.checked; state.pages = []; ctx.refresh(); } } });
  return el("label", { class: "note" }, box, ` Follow (newest page every ${FOLLOW_S} s)`);
}

function filterForm(ctx) {
  const { el } = ctx.helpers;
  const state = ctx.state;
  const filters = state.filters;
  const scoped = !ctx.identity.open && ctx.identity.role !== "admin";
  const field = (name, label, input) => el("label", {}, label, input);
  const text = (name, placeholder, extra = {}) =>
    el("input", { type: "text", name, id: `filter-${name}`, value: filters[name] || "", placeholder, ...extra });
  const choice = (name, values) => el("select", { name, id: `filter-${name}` },
    values.map(([value, label]) => el("option", { value, selected: (filters[name] || "") === value }, label)));
  const form = el("form", { class: "inline filters", id: "records-filters", on: { submit: (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    state.filters = Object.fromEntries(FILTERS.map((name) => [name, (data.get(name) || "").trim()])
      .filter(([, value]) => value !== ""));
    if (scoped) delete state.filters.tenant;
    state.pages = [];
    ctx.refresh();
  } } },
  field("since", "From", text("since", `last ${ctx.window.name}`, { size: 18 })),
  field("until", "Until", text("until", "now", { size: 18 })),
  field("tenant", "Tenant", scoped
    ? el("input", { type: "text", id: "filter-tenant", value: ctx.identity.tenant || "", disabled: true, size: 10 })
    : text("tenant", "any", { size: 10 })),
  field("key", "Key (id or prefix)", text("key", "any", { size: 14 })),
  field("model", "Model", text("model", "any", { size: 12 })),
  field("status", "Status", text("status", "200, 4xx, error", { size: 10, list: "status-classes" })),
  el("datalist", { id: "status-classes" }, ["2xx", "3xx", "4xx", "5xx", "error", "429", "503"].map((v) => el("option", { value: v }))),
  field("cache", "Cache", choice("cache", [["", "any"], ["hit", "hit"], ["miss", "miss"], ["coalesced", "coalesced"], ["bypass", "bypass"]])),
  field("guard", "Guard action", choice("guard", [["", "any"], ["block", "block"], ["redact", "redact"], ["flag", "flag"]])),
  field("limit", "Rows", choice("limit", [["50", "50"], ["100", "100"], ["200", "200"], ["500", "500"]])),
  el("button", { type: "submit", class: "primary", id: "filter-apply" }, "Apply"),
  el("button", { type: "button", id: "filter-reset", on: { click: () => {
    state.filters = { limit: "100" };
    state.pages = [];
    ctx.refresh();
  } } }, "Reset"));
  return el("div", { class: "panel" }, form,
    el("p", { class: "note" }, "Times: ISO 8601 (2026-12-06T14:00, UTC unless it names a zone) or seconds since the epoch; empty From: the window chosen above."));
}

async function detail(root, ctx, requestId) {
  const { el, section, table, fmt } = ctx.helpers;
  const back = el("p", {}, el("a", { href: "#/requests", id: "records-back" }, "← All requests"));
  root.append(back);
  let r;
  try {
    r = await ctx.api(`/admin/records/${encodeURIComponent(requestId)}`);
  } catch (error) {
    if (error.status !== 404 && error.status !== 400) throw error;
    root.append(ctx.helpers.errorBox(error));  // no such request (or not this tenant's)
    return;
  }
  const pairs = (rows) => el("table", { class: "data record" }, el("tbody", {}, rows.map(([name, label, value]) =>
    el("tr", { "data-field": name }, el("th", { scope: "row" }, label), el("td", { "data-col": name }, value)))));
  const or = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));
  const yes = (value) => (value === null || value === undefined ? "—" : value ? "yes" : "no");
  root.append(el("div", { class: "grid" },
    section("Request",
      pairs([
        ["request_id", "Request id", r.request_id],
        ["trace_id", "Trace id", or(r.trace_id)],
        ["received_at", "Received", fmt.dateTime(r.received_at)],
        ["tenant", "Tenant", r.tenant],
        ["key_id", "Key", or(r.key_id)],
        ["user_id", "User", or(r.user_id)],
        ["feature", "Feature", or(r.feature)],
        ["priority", "Tier", or(r.priority)],
        ["operation", "Operation", `${r.operation}${r.stream ? " (streamed)" : ""}`],
        ["status", "Status", el("span", { class: `badge ${STATUS_BADGE(r.status)}` }, `${r.status}${r.error_type ? ` ${r.error_type}` : ""}`)],
        ["finish_reason", "Finish reason", or(r.finish_reason)],
      ])),
    section("Routing and versions",
      pairs([
        ["model", "Model asked for", r.model],
        ["variant", "Experiment variant", or(r.variant)],
        ["served_alias", "Served by alias", or(r.served_alias)],
        ["deployment", "Deployment", or(r.deployment)],
        ["attempts", "Attempts", fmt.int(r.attempts)],
        ["cache_status", "Cache", or(r.cache_status)],
        ["config_version", "Config version", or(r.config_version)],
        ["prompt", "Prompt template", r.prompt_name ? `${r.prompt_name} v${or(r.prompt_version)}` : "—"],
      ])),
    section("Latency, tokens and cost",
      pairs([
        ["e2e_s", "End to end", fmt.ms(r.e2e_s)],
        ["ttft_s", "Time to first token", fmt.ms(r.ttft_s)],
        ["prompt_tokens", "Input tokens", fmt.int(r.prompt_tokens)],
        ["cached_tokens", "Cached input tokens", fmt.int(r.cached_tokens)],
        ["completion_tokens", "Output tokens", fmt.int(r.completion_tokens)],
        ["cost", "Cost", fmt.money(r.cost)],
        ["input_cost", "Input cost", fmt.money(r.input_cost)],
        ["cached_cost", "Cached input cost", fmt.money(r.cached_cost)],
        ["output_cost", "Output cost", fmt.money(r.output_cost)],
        ["instance_cost", "Instance share", fmt.money(r.instance_cost)],
        ["saved_cost", "Saved by the cache", fmt.money(r.saved_cost)],
      ])),
    section("Checks",
      pairs([
        ["guard_action", "Guard action", or(r.guard_action)],
        ["refused", "Refusal", yes(r.refused)],
        ["schema_valid", "Schema valid", yes(r.schema_valid)],
        ["output_passed", "Output checks passed", yes(r.output_passed)],
        ["truncated", "Cut short", yes(r.truncated)],
      ]),
      table([
        { key: "stage", label: "Stage" },
        { key: "check", label: "Check" },
        { key: "verdict", label: "Verdict" },
        { key: "action", label: "Action" },
        { key: "reason", label: "Reason", format: (v) => v || "—" },
      ], r.checks.filter((c) => c && typeof c === "object"), { empty: "No guard check ran on this request." }))));
  root.append(section("Content", r.content_stored
    ? el("div", {},
      el("h3", {}, "Prompt (as stored: redacted)"), el("pre", { class: "code", id: "record-prompt" }, or(r.prompt)),
      el("h3", {}, "Answer (as stored: redacted)"), el("pre", { class: "code", id: "record-completion" }, or(r.completion)))
    : el("p", { class: "empty", id: "record-no-content" }, "Not stored for this request: the content log (store.log_content) is off, or kept nothing.")));
}
