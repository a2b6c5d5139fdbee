// Cost: spend over time by tenant, feature, model or deployment; cost per 1k requests and per
// 1M tokens; what doubling the traffic would add; budgets and how close each is. From
// GET /admin/cost (the ledger's report), /admin/overview (spend per bucket) and /admin/budgets.

export const title = "Cost";
export const roles = ["admin", "operator", "viewer"];
export const refresh = 30;

const DIMENSIONS = [["tenant", "by tenant"], ["feature", "by feature"], ["model", "by model"], ["deployment", "by deployment"]];

function budgetKind(line) {
  return line.state === "over" ? "bad" : line.state === "warning" ? "warn" : "good";
}

export async function render(root, ctx) {
  const { el, table, lineChart, stat, section, choice, meter, badge, fmt } = ctx.helpers;
  const state = ctx.state;
  state.by = state.by || "tenant";
  const until = Math.floor(Date.now() / 1000);
  const since = until - ctx.window.seconds;
  const [report, overview, budgets] = await Promise.all([
    ctx.api("/admin/cost", { query: { since, until, by: state.by, chart: state.by } }),
    ctx.api("/admin/overview", { query: { window_s: ctx.window.seconds, bucket_s: ctx.window.bucket_s, group_by: state.by } }),
    ctx.api("/admin/budgets"),
  ]);
  const currency = report.currency;
  const money = (v) => fmt.money(v, currency);
  const total = report.total;

  root.append(el("div", { class: "toolbar" },
    choice("Group", "by", DIMENSIONS, state.by, (value) => { state.by = value; ctx.refresh(); }),
    el("span", { class: "note" }, `${report.period.start} to ${report.period.end}${report.tenant ? `; tenant ${report.tenant}` : ""}`)));
  root.append(el("div", { class: "stats" },
    stat("cost", "Spend", total.cost, money(total.cost)),
    stat("requests", "Requests", total.requests, fmt.int(total.requests)),
    stat("cost_per_1k_requests", "Per 1k requests", total.cost_per_1k_requests, money(total.cost_per_1k_requests)),
    stat("cost_per_million_tokens", "Per 1M tokens", total.cost_per_million_tokens, money(total.cost_per_million_tokens)),
    stat("saved_cost", "Saved by the cache", total.saved_cost, money(total.saved_cost)),
    total.idle_cost !== undefined ? stat("idle_cost", "Idle instance cost", total.idle_cost, money(total.idle_cost)) : null,
    total.cost_with_idle !== undefined ? stat("cost_with_idle", "Spend with idle", total.cost_with_idle, money(total.cost_with_idle)) : null));

  root.append(section(`Spend per ${overview.bucket_s} s, ${DIMENSIONS.find(([d]) => d === state.by)[1]}`,
    lineChart(overview.series.map((line) => ({ name: line.key, points: overview.buckets.map((start, i) => [start, line.cost[i]]) })),
      { yFormat: money, width: 1280, height: 220 })));

  root.append(section(`Unit economics ${DIMENSIONS.find(([d]) => d === state.by)[1]}`, table([
    { key: "key", label: report.by },
    { key: "requests", label: "requests", numeric: true, format: fmt.int },
    { key: "failed", label: "failed", numeric: true, format: fmt.int },
    { key: "cache_hits", label: "cache hits", numeric: true, format: fmt.int },
    { key: "prompt_tokens", label: "prompt tokens", numeric: true, format: fmt.int },
    { key: "completion_tokens", label: "completion tokens", numeric: true, format: fmt.int },
    { key: "cost", label: "cost", numeric: true, format: money },
    { key: "cost_per_1k_requests", label: "per 1k requests", numeric: true, format: money },
    { key: "cost_per_million_tokens", label: "per 1M tokens", numeric: true, format: money },
    { key: "saved_cost", label: "saved", numeric: true, format: money },
  ], report.lines, { rowAttrs: (row) => ({ "data-key": row.key }) })));

  if (report.doubling) {
    root.append(section("If traffic doubles",
      el("p", { class: "note" }, report.peak ? `Twice each deployment's peak (${report.peak.basis}).` : ""),
      table([
        { key: "alias", label: "model" },
        { key: "deployment", label: "deployment" },
        { key: "added_cost", label: "added cost", numeric: true, format: money },
        { key: "token_cost", label: "token cost", numeric: true, format: money },
        { key: "instance_cost", label: "instance cost", numeric: true, format: money },
        { key: "instances", label: "instances", numeric: true, format: fmt.int },
        { key: "instances_needed", label: "needed", numeric: true, format: fmt.int },
        { key: "limiting", label: "limit" },
        { key: "doubled_requests_per_s", label: "req/s at 2x", numeric: true, format: fmt.rate },
        { key: "latency_p95_s", label: "p95 at 2x", numeric: true, format: fmt.ms },
        { key: "reason", label: "basis" },
      ], report.doubling, { empty: "No deployment served requests in this window." })));
  } else {
    root.append(section("If traffic doubles", el("p", { class: "note" },
      "The doubling estimate covers the whole platform's deployments: an admin key sees it.")));
  }

  if (report.deployments && report.deployments.length) {
    root.append(section("Deployments: instance time", table([
      { key: "alias", label: "model" },
      { key: "deployment", label: "deployment" },
      { key: "requests", label: "requests", numeric: true, format: fmt.int },
      { key: "token_cost", label: "token cost", numeric: true, format: money },
      { key: "instance_time_cost", label: "instance time", numeric: true, format: money },
      { key: "idle_cost", label: "idle", numeric: true, format: money },
      { key: "utilization", label: "utilization", numeric: true, format: (v) => fmt.percent(v, 2) },
      { key: "peak_requests_per_s", label: "peak req/s", numeric: true, format: fmt.rate },
    ], report.deployments)));
  }

  root.append(section("Budgets", table([
    { key: "scope", label: "budget" },
    { key: "tenant", label: "tenant" },
    { key: "period", label: "period", format: (v, row) => `${v} ${row.period_id}` },
    { key: "spent", label: "spent", numeric: true, format: money },
    { key: "limit", label: "limit", numeric: true, format: money },
    { key: "used", label: "used", numeric: true, format: (v, row) => el("span", {}, meter(v, budgetKind(row)), " ", fmt.percent(v)) },
    { key: "state", label: "state", format: (v, row) => badge(v, budgetKind(row)) },
    { key: "resets_at", label: "resets", format: (v) => fmt.dateTime(v) },
  ], budgets.data, { empty: "No budgets apply (limits.budgets, or a key's own budget).",
    rowAttrs: (row) => ({ "data-scope": row.scope, "data-period": row.period }) })));
}
