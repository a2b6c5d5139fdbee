// Overview: traffic, errors, tokens and latency percentiles per model or deployment over the
// selected window, from GET /admin/overview (exact nearest-rank percentiles per bucket).

export const title = "Overview";
export const roles = ["admin", "operator", "viewer"];
export const refresh = 15;

const GROUPS = [["model", "by model"], ["deployment", "by deployment"], ["tenant", "by tenant"], ["feature", "by feature"]];
const PERCENTILES = [["p50", "p50"], ["p95", "p95"], ["p99", "p99"]];

/** [[bucket start, value], ...] of one series: `value(index)` per bucket (null: no value). */
function points(report, value) {
  return report.buckets.map((start, index) => [start, value(index)]);
}

export async function render(root, ctx) {
  const { el, table, lineChart, stat, section, choice, fmt } = ctx.helpers;
  const state = ctx.state;
  state.group = state.group || "model";
  state.percentile = state.percentile || "p95";
  const report = await ctx.api("/admin/overview", {
    query: { window_s: ctx.window.seconds, bucket_s: ctx.window.bucket_s, group_by: state.group },
  });
  const total = report.total;
  const seconds = report.bucket_seconds;
  const p = state.percentile;

  root.append(el("div", { class: "toolbar" },
    choice("Group", "group", GROUPS, state.group, (value) => { state.group = value; ctx.refresh(); }),
    choice("Latency percentile", "percentile", PERCENTILES, p, (value) => { state.percentile = value; ctx.refresh(); }),
    el("span", { class: "note" },
      `${fmt.int(total.requests)} requests since ${fmt.time(report.since)}; percentiles exact (${report.method}) ` +
      `over successful requests; ${report.bucket_s} s buckets${report.tenant ? `; tenant ${report.tenant}` : ""}`)));

  root.append(el("div", { class: "stats" },
    stat("requests", "Requests", total.requests, fmt.int(total.requests)),
    stat("requests_per_s", "Requests/s", total.requests_per_s, fmt.rate(total.requests_per_s)),
    stat("error_rate", "Error rate", total.error_rate, fmt.percent(total.error_rate, 2)),
    stat("tokens_per_s", "Tokens/s", total.tokens_per_s, fmt.rate(total.tokens_per_s)),
    ...["p50", "p95", "p99"].map((q) => stat(`e2e_${q}`, `e2e ${q}`, total.e2e_s && total.e2e_s[q], fmt.ms(total.e2e_s && total.e2e_s[q]))),
    ...["p50", "p95", "p99"].map((q) => stat(`ttft_${q}`, `TTFT ${q}`, total.ttft_s && total.ttft_s[q], fmt.ms(total.ttft_s && total.ttft_s[q])))));

  const lines = report.series;
  const chart = (chartTitle, value, yFormat) => lineChart(
    lines.map((line) => ({ name: line.key, points: points(report, (i) => value(line, i)) })),
    { title: chartTitle, yFormat });
  root.append(el("div", { class: "grid" },
    section("Traffic",
      chart("Requests/s", (line, i) => line.requests[i] / seconds[i], (y) => fmt.number(y, 2)),
      chart("Error rate", (line, i) => (line.requests[i] ? line.errors[i] / line.requests[i] : null), (y) => fmt.percent(y, 0)),
      chart("Tokens/s (prompt + completion)", (line, i) => (line.prompt_tokens[i] + line.completion_tokens[i]) / seconds[i], (y) => fmt.number(y, 1))),
    section("Latency",
      chart(`End-to-end ${p}`, (line, i) => line.e2e_s[p][i], fmt.ms),
      chart(`Time to first token ${p}`, (line, i) => line.ttft_s[p][i], fmt.ms))));

  const rows = report.groups.map((g) => ({
    key: g.key, requests: g.requests, requests_per_s: g.requests_per_s, errors: g.errors, error_rate: g.error_rate,
    tokens_per_s: g.tokens_per_s,
    e2e_p50: g.e2e_s && g.e2e_s.p50, e2e_p95: g.e2e_s && g.e2e_s.p95, e2e_p99: g.e2e_s && g.e2e_s.p99,
    ttft_p50: g.ttft_s && g.ttft_s.p50, ttft_p95: g.ttft_s && g.ttft_s.p95, ttft_p99: g.ttft_s && g.ttft_s.p99,
  }));
  const ms = (v) => fmt.ms(v);
  root.append(section(`Per ${state.group} over the window`, table([
    { key: "key", label: state.group },
    { key: "requests", label: "requests", numeric: true, format: fmt.int },
    { key: "requests_per_s", label: "req/s", numeric: true, format: fmt.rate },
    { key: "errors", label: "errors", numeric: true, format: fmt.int },
    { key: "error_rate", label: "error rate", numeric: true, format: (v) => fmt.percent(v, 2) },
    { key: "tokens_per_s", label: "tokens/s", numeric: true, format: fmt.rate },
    { key: "e2e_p50", label: "e2e p50", numeric: true, format: ms },
    { key: "e2e_p95", label: "e2e p95", numeric: true, format: ms },
    { key: "e2e_p99", label: "e2e p99", numeric: true, format: ms },
    { key: "ttft_p50", label: "TTFT p50", numeric: true, format: ms },
    { key: "ttft_p95", label: "TTFT p95", numeric: true, format: ms },
    { key: "ttft_p99", label: "TTFT p99", numeric: true, format: ms },
  ], rows, { rowAttrs: (row) => ({ "data-key": row.key }) })));
}
