// Batches: the Batch API's batches, newest first: status, progress (completed and failed of
// the total), lines a second, what their requests cost, and when each was created and finished.
// From GET /admin/batches (an admin sees every tenant's, anyone else their own tenant's).

export const title = "Batches";
export const roles = ["admin", "operator", "viewer"];
export const refresh = 5;

const STATUSES = ["", "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"];
const RUNNING = new Set(["validating", "in_progress", "finalizing", "cancelling"]);

function statusKind(status) {
  if (status === "completed") return "good";
  if (status === "failed" || status === "expired") return "bad";
  return "warn";
}

export async function render(root, ctx) {
  const { el, table, stat, section, meter, badge, choice, fmt } = ctx.helpers;
  const state = ctx.state;
  state.status = state.status || "";
  const report = await ctx.api("/admin/batches", { query: state.status ? { status: state.status } : {} });
  const batches = report.data;
  const money = (v) => fmt.money(v, report.currency);
  const running = batches.filter((b) => RUNNING.has(b.status));
  const pending = running.reduce((sum, b) => sum + b.request_counts.total - b.request_counts.completed - b.request_counts.failed, 0);
  const rate = running.reduce((sum, b) => sum + (b.lines_per_s || 0), 0);
  const cost = batches.reduce((sum, b) => sum + b.cost, 0);

  root.append(el("div", { class: "toolbar" },
    choice("Status", "status", STATUSES.map((s) => [s, s || "any"]), state.status, (value) => { state.status = value; ctx.refresh(); }),
    el("span", { class: "note" }, `the ${batches.length} newest batches${state.status ? ` ${state.status}` : ""}`)));
  root.append(el("div", { class: "stats" },
    stat("running", "Running", running.length, fmt.int(running.length)),
    stat("lines_left", "Lines left", pending, fmt.int(pending)),
    stat("lines_per_s", "Lines a second", rate, fmt.rate(rate)),
    stat("cost", "Cost of these batches", cost, money(cost))));

  root.append(section("Batches", table([
    { key: "id", label: "batch", format: (v, row) => el("span", { title: row.endpoint }, v) },
    { key: "tenant", label: "tenant" },
    { key: "status", label: "status", format: (v) => badge(v, statusKind(v)) },
    { key: "progress", label: "progress", numeric: true,
      format: (v, row) => el("span", {}, meter(v, row.failed ? "warn" : "good"), " ", fmt.percent(v, 0)) },
    { key: "completed", label: "completed", numeric: true, format: fmt.int },
    { key: "failed", label: "failed", numeric: true, format: fmt.int },
    { key: "total", label: "total", numeric: true, format: fmt.int },
    { key: "lines_per_s", label: "lines/s", numeric: true, format: fmt.rate },
    { key: "cost", label: "cost", numeric: true, format: money },
    { key: "created_at", label: "created", numeric: true, format: fmt.dateTime },
    { key: "finished_at", label: "finished", numeric: true, format: fmt.dateTime },
  ], batches.map((b) => ({ ...b, ...b.request_counts })), {
    empty: "No batches yet: POST /v1/batches with a file uploaded to /v1/files (purpose batch).",
    rowAttrs: (row) => ({ "data-batch": row.id }),
  })));
}
