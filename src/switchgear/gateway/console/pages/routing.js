/*
 * Routing: every deployment's health, ejections, in flight, EWMA latency and share of traffic;
 * experiments and their canaries; the priority tiers' queues and shedding; the retry budget.
 * All from GET /admin/routing; the EWMA latencies of the last refreshes are kept in ctx.state
 * and drawn as a chart (this page's own history, nothing stored on the server).
 */

export const title = "Routing";
export const roles = ["admin", "operator", "viewer"];
export const refresh = 5;

/** Samples of each deployment's EWMA latency kept for the chart (at 5 s: ten minutes). */
const HISTORY = 120;
const STATE_BADGE = { healthy: "good", probing: "warn", ejected: "bad" };

export async function render(root, ctx) {
  const { el, stat, section, table, lineChart, fmt } = ctx.helpers;
  const data = await ctx.api("/admin/routing");
  const aliases = Object.entries(data.models).sort(([a], [b]) => a.localeCompare(b));
  const deployments = aliases.flatMap(([alias, entry]) => entry.deployments.map((d) => ({ alias, ...d })));
  remember(ctx.state, deployments);

  const count = (state) => deployments.filter((d) => d.state === state).length;
  const budget = data.retry_budget;
  root.append(el("div", { class: "stats" },
    stat("deployments", "Deployments", deployments.length, fmt.int(deployments.length)),
    stat("healthy", "Healthy", count("healthy"), fmt.int(count("healthy"))),
    stat("ejected", "Ejected", count("ejected"), fmt.int(count("ejected"))),
    stat("probing", "Probing", count("probing"), fmt.int(count("probing"))),
    stat("in_flight", "In flight", sum(deployments, "in_flight"), fmt.int(sum(deployments, "in_flight"))),
    stat("retry_tokens", "Retry budget", budget.tokens, `${fmt.number(budget.tokens, 1)} / ${fmt.int(budget.capacity)}`),
    stat("retries_refused", "Retries refused", budget.refused, fmt.int(budget.refused))));

  const columns = [
    { key: "name", label: "Deployment" },
    { key: "state", label: "State", format: (v) => el("span", { class: `badge ${STATE_BADGE[v] || "warn"}` }, v) },
    { key: "reason", label: "Why", format: (v) => v || "—" },
    { key: "ejections", label: "Ejections", numeric: true, format: fmt.int },
    { key: "ejected_for_s", label: "Back in", numeric: true, format: (v) => (v === null ? "—" : fmt.ms(v)) },
    { key: "consecutive_failures", label: "Failures in a row", numeric: true, format: fmt.int },
    { key: "in_flight", label: "In flight", numeric: true, format: fmt.int },
    { key: "ewma_ttft_ms", label: "EWMA TTFT", numeric: true, format: (v) => fmt.ms(v === null ? null : v / 1000) },
    { key: "ewma_total_ms", label: "EWMA total", numeric: true, format: (v) => fmt.ms(v === null ? null : v / 1000) },
    { key: "error_ratio", label: "Errors", numeric: true, format: (v) => fmt.percent(v) },
    { key: "traffic_share", label: "Share", numeric: true, format: (v) => share(el, fmt, v) },
    { key: "attempts", label: "Attempts", numeric: true, format: fmt.int },
  ];
  const served = aliases.filter(([, entry]) => entry.deployments.length > 0);
  root.append(section("Deployments",
    ...served.map(([alias, entry]) => el("div", { class: "alias", "data-alias": alias },
      el("h3", {}, alias, " ", el("span", { class: "note" }, `policy ${entry.policy}`,
        entry.fallbacks.length ? ` · falls back to ${entry.fallbacks.join(", ")}` : "")),
      table(columns, entry.deployments, {
        empty: "No deployments.",
        rowAttrs: (d) => ({ "data-deployment": `${alias}/${d.name}` }),
      }))),
    served.length ? null : el("p", { class: "empty" }, "No deployments configured.")));

  const series = Object.entries(ctx.state.history || {}).map(([name, points]) => ({ name, points }));
  root.append(section("EWMA latency while this page is open",
    lineChart(series, { title: "EWMA end-to-end latency per deployment", yFormat: (y) => fmt.ms(y), height: 140 })));

  const experiments = aliases.filter(([, entry]) => entry.variants);
  root.append(section("Experiments and canaries", experiments.length === 0
    ? el("p", { class: "empty" }, "No experiments configured.")
    : experiments.map(([alias, entry]) => experiment(ctx, alias, entry))));

  root.append(section("Priority tiers", data.priority ? tiers(ctx, data.priority)
    : el("p", { class: "empty" }, "No priority gate: every request runs at once (the tiers section is not configured).")));
}

function sum(rows, key) {
  return rows.reduce((total, row) => total + (row[key] || 0), 0);
}

/** A share as a bar and a percentage (the bar's width set through the CSSOM, which the CSP allows). */
function share(el, fmt, fraction) {
  const bar = el("span");
  bar.style.width = `${Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100)}%`;
  return el("div", { class: "share" }, fmt.percent(fraction),
    el("div", { class: "meter", title: fmt.percent(fraction) }, bar));
}

/** Append this refresh's EWMA latencies (seconds) to each deployment's history. */
function remember(state, deployments) {
  const now = Date.now() / 1000;
  const history = state.history || (state.history = {});
  for (const d of deployments) {
    const name = `${d.alias}/${d.name}`;
    const points = history[name] || (history[name] = []);
    points.push([now, d.ewma_total_ms === null ? null : d.ewma_total_ms / 1000]);
    if (points.length > HISTORY) points.splice(0, points.length - HISTORY);
  }
}

function experiment(ctx, alias, entry) {
  const { el, table, fmt } = ctx.helpers;
  const total = Object.values(entry.variants).reduce((a, b) => a + b, 0) || 1;
  const canary = entry.canary;
  const rows = Object.entries(entry.variants).map(([variant, weight]) => ({
    variant, weight, share: weight / total,
    role: canary && canary.variant === variant ? "canary" : "variant",
  }));
  let state = null;
  if (canary) {
    state = canary.rolled_back
      ? el("p", {}, el("span", { class: "badge bad" }, "rolled back"), " ", canary.rolled_back)
      : el("p", {}, el("span", { class: "badge good" }, "running"),
        ` canary ${canary.variant}: ${fmt.int(canary.samples.canary)} canary and ${fmt.int(canary.samples.baseline)} baseline requests in its window; it is judged from ${fmt.int(canary.min_samples)} of each`);
  }
  return el("div", { class: "experiment", "data-experiment": alias },
    el("h3", {}, alias, " ", el("span", { class: "note" }, `sticky by ${entry.sticky || "none"}`)),
    table([
      { key: "variant", label: "Variant" },
      { key: "role", label: "Role" },
      { key: "weight", label: "Weight", numeric: true },
      { key: "share", label: "Share of new requests", numeric: true, format: (v) => fmt.percent(v) },
    ], rows, { rowAttrs: (row) => ({ "data-variant": row.variant }) }),
    state);
}

function tiers(ctx, gate) {
  const { el, stat, table, fmt } = ctx.helpers;
  const rows = Object.entries(gate.tiers).map(([tier, t]) => ({ tier, ...t }));
  return el("div", {},
    el("div", { class: "stats" },
      stat("gate_capacity", "Capacity", gate.capacity, fmt.int(gate.capacity)),
      stat("gate_in_use", "Running", gate.in_use, fmt.int(gate.in_use)),
      stat("gate_waiting", "Waiting", gate.waiting, `${fmt.int(gate.waiting)} / ${fmt.int(gate.max_waiting)}`),
      stat("gate_shed", "Shed", sum(rows, "shed"), fmt.int(sum(rows, "shed")))),
    table([
      { key: "tier", label: "Tier" },
      { key: "waiting", label: "Waiting", numeric: true, format: fmt.int },
      { key: "max_queue", label: "Queue size", numeric: true, format: fmt.int },
      { key: "max_depth", label: "Deepest", numeric: true, format: fmt.int },
      { key: "in_use", label: "Running", numeric: true, format: fmt.int },
      { key: "admitted", label: "Admitted", numeric: true, format: fmt.int },
      { key: "shed", label: "Shed", numeric: true, format: fmt.int },
      { key: "shed_queue_full", label: "Queue full", numeric: true, format: fmt.int },
      { key: "shed_displaced", label: "Displaced", numeric: true, format: fmt.int },
      { key: "shed_wait_target", label: "Past wait target", numeric: true, format: fmt.int },
      { key: "wait_target_ms", label: "Wait target", numeric: true, format: (v) => fmt.ms(v / 1000) },
      { key: "headroom", label: "Headroom", numeric: true, format: fmt.int },
    ], rows, { rowAttrs: (row) => ({ "data-tier": row.tier }) }));
}
