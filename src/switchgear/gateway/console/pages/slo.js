// SLOs: each objective's SLI, error budget left, burn rate per window and its alerts, from
// GET /admin/slo (the SLO monitor's latest evaluation; each SLO has its own rolling window).

export const title = "SLOs";
export const roles = ["admin", "operator", "viewer"];
export const refresh = 15;

function indicator(sli) {
  if (sli.kind === "latency") return `${sli.measure} under ${sli.threshold * 1000} ms`;
  return sli.kind;
}

function budgetKind(remaining) {
  if (remaining === null || remaining === undefined) return "good";
  return remaining <= 0 ? "bad" : remaining < 0.25 ? "warn" : "good";
}

export async function render(root, ctx) {
  const { el, table, stat, section, meter, badge, fmt } = ctx.helpers;
  const report = await ctx.api("/admin/slo");
  const objectives = report.data;
  const firing = objectives.flatMap((o) => Object.entries(o.alerts)
    .filter(([, alert]) => alert.state === "firing").map(([severity, alert]) => ({ slo: o.name, severity, since: alert.since })));
  const budgets = objectives.map((o) => o.error_budget_remaining).filter((b) => b !== null && b !== undefined);
  const lowest = budgets.length ? Math.min(...budgets) : null;

  root.append(el("div", { class: "stats" },
    stat("objectives", "Objectives", objectives.length, fmt.int(objectives.length)),
    stat("alerts_firing", "Alerts firing", firing.length, fmt.int(firing.length)),
    stat("lowest_budget", "Lowest budget left", lowest, fmt.percent(lowest))));
  if (report.time_scale !== 1) {
    root.append(el("p", { class: "note" }, `Windows are scaled by ${report.time_scale} (slo.time_scale).`));
  }
  if (firing.length) {
    root.append(section("Alerts firing", table([
      { key: "slo", label: "SLO" },
      { key: "severity", label: "severity", format: (v) => badge(v, v === "page" ? "bad" : "warn") },
      { key: "since", label: "since", format: (v) => `${fmt.dateTime(v)} (${fmt.ago(v)})` },
    ], firing)));
  }
  const rows = objectives.map((o) => ({ ...o, indicator_text: indicator(o.indicator) }));
  root.append(section("Objectives", table([
    { key: "name", label: "SLO" },
    { key: "owner", label: "owner" },
    { key: "indicator_text", label: "good means" },
    { key: "scope", label: "scope", format: (v) => Object.entries(v || {}).map(([k, x]) => `${k}=${x}`).join(", ") || "all" },
    { key: "target", label: "target", numeric: true, format: (v) => fmt.percent(v, 3) },
    { key: "window", label: "window" },
    { key: "sli", label: "SLI", numeric: true, format: (v) => fmt.percent(v, 3) },
    { key: "requests", label: "requests", numeric: true, format: fmt.int },
    { key: "bad", label: "bad", numeric: true, format: fmt.int },
    { key: "error_budget_remaining", label: "budget left", numeric: true,
      format: (v) => el("span", {}, meter(v, budgetKind(v)), " ", fmt.percent(v)) },
    { key: "alerts", label: "alerts", format: (v) => Object.entries(v).map(([severity, alert]) =>
      badge(`${severity}: ${alert.state}`, alert.state === "firing" ? "bad" : "good")) },
  ], rows, { empty: "No SLOs are configured (slo.objectives).", rowAttrs: (row) => ({ "data-slo": row.name }) })));

  for (const o of objectives) {
    const rates = Object.entries(o.burn_rates || {}).map(([window, rate]) => ({ window, rate }));
    root.append(section(`${o.name}: burn rate per window`,
      o.description ? el("p", { class: "note" }, o.description) : null,
      el("p", { class: "note" }, o.evaluated_at ? `evaluated ${fmt.ago(o.evaluated_at)}; a burn rate of 1 spends the budget exactly over ${o.window}`
        : "not evaluated yet"),
      table([
        { key: "window", label: "window" },
        { key: "rate", label: "burn rate", numeric: true,
          format: (v) => el("span", { class: v > 1 ? "badge bad" : "" }, fmt.number(v, 2)) },
      ], rates, { empty: "No burn rates yet." })));
  }
}
