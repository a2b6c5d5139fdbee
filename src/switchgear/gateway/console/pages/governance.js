/*
 * Governance: changes waiting for review (approve / reject / apply, the two-person rule enforced
 * by the API, whose refusal is shown where the button was), config versions with a readable diff
 * between any two, prompt versions, the audit trail with its verification state, and keys
 * (a new key's secret shown once, revoke). Each section asks the API on its own: a section the
 * key's role may not read says so, and the others still show.
 */

export const title = "Governance";
export const roles = ["admin", "operator", "viewer", "approver"];
export const refresh = 0;

const CHANGE_BADGE = { pending: "warn", approved: "good", applied: "good", rejected: "bad" };
const AUDIT_PAGE = 50;
/** Who may read what, as the admin API decides it (gateway/admin.py, config_admin.py). */
const READERS = ["admin", "operator", "viewer"];
const CONFIG_READERS = [...READERS, "approver"];

export async function render(root, ctx) {
  const { el } = ctx.helpers;
  root.append(el("div", { class: "toolbar" },
    el("button", { type: "button", id: "governance-reload", on: { click: () => ctx.refresh() } }, "Reload"),
    el("span", { class: "note" }, "This page reloads when you act on it or press Reload.")));
  const parts = await Promise.all([changes(ctx), versions(ctx), prompts(ctx), audit(ctx), keys(ctx)]);
  root.append(...parts);
}

/** Whether the signed-in key has one of ``names`` (open mode: every role). */
function may(ctx, ...names) {
  return ctx.identity.open || names.includes(ctx.identity.role);
}

/** "a viewer key", "an admin key". */
function roleKey(role) {
  return `${/^[aeiou]/.test(role) ? "an" : "a"} ${role} key`;
}

/**
 * A section filled by ``fill`` (async, returns children) when the key's role is one of
 * ``readers`` (the roles the API lets read it; the page does not ask for what it would refuse);
 * a 403 becomes a note in it, any other refusal an error box; a 401 goes to the shell (sign-in).
 */
async function part(ctx, name, heading, readers, fill) {
  const { el, section, errorBox } = ctx.helpers;
  const forbidden = (why) => el("p", { class: "note forbidden-part", "data-forbidden": name },
    `403: ${roleKey(ctx.identity.role)} cannot see this${why ? ` (${why})` : ""}.`);
  let body;
  try {
    body = may(ctx, ...readers) ? await fill() : forbidden(null);
  } catch (error) {
    if (error.status === 401 || error.name === "AbortError") throw error;
    body = error.status === 403 ? forbidden(error.message) : errorBox(error);
  }
  const shown = section(heading, body);
  shown.setAttribute("data-section", name);
  return shown;
}

/** Run ``action`` (an API call) from a button; its refusal goes into ``where``, success reloads. */
function act(ctx, where, action) {
  return async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    where.replaceChildren();
    try {
      await action();
    } catch (error) {
      if (error.status === 401) return;
      where.replaceChildren(ctx.helpers.errorBox(error));
      button.disabled = false;
      return;
    }
    ctx.refresh();
  };
}

/** A unified diff, each line in its own element classed add/del/hunk/file. */
function diffView(ctx, text, id) {
  const { el } = ctx.helpers;
  if (!text) return el("p", { class: "empty" }, "No differences.");
  const lines = text.replace(/\n$/, "").split("\n").map((line) => {
    const kind = line.startsWith("+++") || line.startsWith("---") ? "file"
      : line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "same";
    return el("span", { class: `line ${kind}` }, `${line}\n`);
  });
  return el("pre", { class: "diff", id }, lines);
}

function changes(ctx) {
  const { el, table, fmt } = ctx.helpers;
  return part(ctx, "changes", "Changes waiting for review or to be applied", CONFIG_READERS, async () => {
    const answer = await ctx.api("/admin/config/changes");
    const waiting = answer.data.filter((c) => c.status === "pending" || c.status === "approved" || c.review_required);
    const cards = waiting.map((change) => {
      const result = el("div", { class: "action-result" });
      const comment = el("input", { type: "text", name: "comment", placeholder: "comment (optional)", size: 30 });
      const review = (approve) => act(ctx, result, () => ctx.api(
        `/admin/config/changes/${encodeURIComponent(change.change_id)}/review`,
        { method: "POST", body: { approve, comment: comment.value } }));
      const apply = act(ctx, result, () => ctx.api(
        `/admin/config/changes/${encodeURIComponent(change.change_id)}/apply`, { method: "POST", body: {} }));
      const reviewable = change.status === "pending" || change.review_required;
      const buttons = [
        reviewable && may(ctx, "admin", "approver") ? [comment,
          el("button", { type: "button", class: "primary approve", on: { click: review(true) } },
            change.review_required ? "Approve (after break-glass)" : "Approve"),
          el("button", { type: "button", class: "reject", on: { click: review(false) } }, "Reject")] : null,
        change.status === "approved" && may(ctx, "admin", "operator")
          ? el("button", { type: "button", class: "primary apply", on: { click: apply } }, "Apply") : null,
        change.status === "approved" && !may(ctx, "admin", "operator")
          ? el("span", { class: "note" }, "Approved: an admin or operator applies it.") : null,
      ];
      return el("article", { class: "change panel", "data-change": change.change_id },
        el("h3", {}, `${change.change_id} `, el("span", { class: `badge ${CHANGE_BADGE[change.status] || "warn"}` },
          change.review_required ? "applied by break-glass: review required" : change.status)),
        el("p", {}, `by ${change.author}, ${fmt.dateTime(change.created_at)}, on version ${change.base_version}`,
          change.rollback_of ? ` (rollback to version ${change.rollback_of})` : "",
          ` · sections: ${change.sections.join(", ") || "—"}`),
        change.message ? el("p", { class: "message" }, change.message) : null,
        diffView(ctx, change.diff, null),
        el("div", { class: "toolbar" }, buttons),
        result);
    });
    return el("div", {},
      cards.length ? cards : el("p", { class: "empty" }, "No change is waiting for review or to be applied."),
      el("h3", {}, "Recent changes"),
      table([
        { key: "change_id", label: "Change" },
        { key: "status", label: "Status", format: (v) => el("span", { class: `badge ${CHANGE_BADGE[v] || "warn"}` }, v) },
        { key: "author", label: "Author" },
        { key: "reviewer", label: "Reviewer", format: (v, row) => (v ? `${v} (${row.review})` : "—") },
        { key: "applied_version", label: "Version", numeric: true, format: (v) => (v === null ? "—" : String(v)) },
        { key: "break_glass", label: "Break-glass", format: (v) => (v ? "yes" : "no") },
        { key: "created_at", label: "Proposed", format: (v) => fmt.dateTime(v) },
        { key: "message", label: "Message", format: (v) => v || "—" },
      ], answer.data.slice(0, 20), { empty: "No change proposed yet.", rowAttrs: (c) => ({ "data-change-id": c.change_id }) }));
  });
}

function versions(ctx) {
  const { el, table, fmt } = ctx.helpers;
  return part(ctx, "versions", "Config versions", CONFIG_READERS, async () => {
    const history = await ctx.api("/admin/config/history");
    const numbers = history.versions.map((v) => v.version);
    const newest = numbers[0];
    const chosen = ctx.state.diff || {};
    const to = numbers.includes(chosen.to) ? chosen.to : newest;
    const from = numbers.includes(chosen.from) ? chosen.from : Math.max(1, to - 1);
    const pick = (name, value) => el("select", { name, id: `diff-${name}` },
      numbers.map((n) => el("option", { value: n, selected: n === value }, `version ${n}`)));
    const form = el("form", { class: "inline", id: "diff-form", on: { submit: (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      ctx.state.diff = { from: Number(data.get("from")), to: Number(data.get("to")) };
      ctx.refresh();
    } } }, el("label", {}, "From", pick("from", from)), el("label", {}, "To", pick("to", to)),
    el("button", { type: "submit" }, "Show the diff"));
    const diff = numbers.length > 1 && from !== to
      ? await ctx.api("/admin/config/diff", { query: { from, to } }) : null;
    return el("div", {},
      el("p", { class: "note" }, `This replica serves version ${history.serving}.`),
      table([
        { key: "version", label: "Version", numeric: true,
          format: (v) => (v === history.serving ? `${v} (serving)` : String(v)) },
        { key: "applied_at", label: "Applied", format: (v) => fmt.dateTime(v) },
        { key: "applied_by", label: "By" },
        { key: "change_id", label: "Change", format: (v) => v || "—" },
        { key: "break_glass", label: "Break-glass", format: (v) => (v ? "yes" : "no") },
        { key: "prompt_versions", label: "Prompt versions",
          format: (v) => Object.entries(v || {}).map(([name, n]) => `${name} v${n}`).join(", ") || "—" },
      ], history.versions, { rowAttrs: (v) => ({ "data-version": v.version }) }),
      numbers.length > 1 ? form : null,
      diff ? el("div", {}, el("h3", {}, `Version ${diff.from} → version ${diff.to}`), diffView(ctx, diff.diff, "config-diff")) : null);
  });
}

function prompts(ctx) {
  const { el, table, fmt } = ctx.helpers;
  return part(ctx, "prompts", "Prompt versions", READERS, async () => {
    const answer = await ctx.api("/admin/prompts");
    const name = ctx.state.prompt;
    const open = name && answer.data.some((p) => p.name === name)
      ? await ctx.api(`/admin/prompts/${encodeURIComponent(name)}`) : null;
    return el("div", {},
      table([
        { key: "name", label: "Template" },
        { key: "version", label: "Version", numeric: true },
        { key: "description", label: "Description", format: (v) => v || "—" },
        { key: "variables", label: "Variables", format: (v) => v.join(", ") || "—" },
        { key: "messages", label: "Messages", numeric: true },
      ], answer.data, {
        empty: "No managed prompt templates in the serving config.",
        onRowClick: (p) => { ctx.state.prompt = p.name; ctx.refresh(); },
        rowAttrs: (p) => ({ "data-prompt": p.name }),
      }),
      open ? el("div", { id: "prompt-detail" },
        el("h3", {}, `${open.name}, version ${open.version}`),
        table([
          { key: "version", label: "Version", numeric: true },
          { key: "config_version", label: "Config version", numeric: true },
          { key: "applied_at", label: "Applied", format: (v) => fmt.dateTime(v) },
          { key: "applied_by", label: "By" },
        ], open.history, { empty: "No history among the newest config versions." }),
        el("pre", { class: "code" }, open.messages.map((m) => `${m.role}: ${m.content}\n`))) : null);
  });
}

function audit(ctx) {
  const { el, table, fmt } = ctx.helpers;
  return part(ctx, "audit", "Audit trail", ["admin"], async () => {
    const state = ctx.state.audit || (ctx.state.audit = { before: [] });
    const [check, entries] = await Promise.all([
      ctx.api("/admin/audit/verify"),
      ctx.api("/admin/audit", { query: { limit: AUDIT_PAGE, action: state.action,
        before: state.before[state.before.length - 1] } }),
    ]);
    const verdict = !check.checked ? ["bad", "not checked"] : check.intact ? ["good", "intact"] : ["bad", "TAMPERED"];
    const rows = entries.data;
    const oldest = rows.length ? rows[rows.length - 1].seq : null;
    const filter = el("form", { class: "inline", id: "audit-filter", on: { submit: (event) => {
      event.preventDefault();
      state.action = new FormData(event.target).get("action").trim() || undefined;
      state.before = [];
      ctx.refresh();
    } } }, el("label", {}, "Action", el("input", { type: "text", name: "action", value: state.action || "",
      placeholder: "e.g. key.create", list: "audit-actions" })),
    el("datalist", { id: "audit-actions" }, ["admin.access", "admin.denied", "admin.auth_failed", "key.create",
      "key.revoke", "config.propose", "config.approve", "config.reject", "config.apply", "config.break_glass"]
      .map((a) => el("option", { value: a }))),
    el("button", { type: "submit" }, "Filter"));
    return el("div", {},
      el("div", { class: "verification", id: "audit-verification", "data-intact": String(check.intact) },
        el("p", {}, el("span", { class: `badge ${verdict[0]}` }, verdict[1]), " ", check.verdict),
        check.anchor ? el("p", { class: "note" }, "Anchor to keep elsewhere (switchgear audit verify --anchor): ",
          el("code", {}, check.anchor)) : null,
        el("p", { class: "note" }, `Checked ${fmt.dateTime(check.checked_at)}${check.key_id ? ` with key id ${check.key_id}` : ""}.`)),
      filter,
      table([
        { key: "seq", label: "#", numeric: true },
        { key: "at", label: "Time", format: (v) => fmt.dateTime(v) },
        { key: "actor", label: "Actor" },
        { key: "role", label: "Role", format: (v) => v || "—" },
        { key: "tenant", label: "Tenant", format: (v) => v || "—" },
        { key: "source", label: "From", format: (v) => v || "—" },
        { key: "action", label: "Action" },
        { key: "target", label: "Target", format: (v) => v || "—" },
        { key: "details", label: "Details", format: (v) => JSON.stringify(v) },
      ], rows, { empty: "No entries.", rowAttrs: (e) => ({ "data-seq": e.seq }) }),
      el("div", { class: "toolbar" },
        el("button", { type: "button", id: "audit-newer", disabled: state.before.length === 0,
          on: { click: () => { state.before.pop(); ctx.refresh(); } } }, "← Newer"),
        el("button", { type: "button", id: "audit-older", disabled: rows.length < AUDIT_PAGE || oldest === null,
          on: { click: () => { state.before.push(oldest); ctx.refresh(); } } }, "Older →")));
  });
}

function keys(ctx) {
  const { el, table, fmt } = ctx.helpers;
  return part(ctx, "keys", "Keys", READERS, async () => {
    const answer = await ctx.api("/admin/keys");
    const admin = may(ctx, "admin");
    const now = Date.now() / 1000;
    const secret = ctx.state.secret;
    delete ctx.state.secret;  // shown this once: the next render has forgotten it
    const revoke = (key) => {
      const result = el("span", { class: "action-result" });
      const button = el("button", { type: "button", class: "revoke", "data-key": key.id });
      button.textContent = "Revoke";
      button.addEventListener("click", async (event) => {
        if (button.dataset.armed !== "yes") {  // a second click confirms
          button.dataset.armed = "yes";
          button.textContent = "Confirm revoke";
          return;
        }
        await act(ctx, result, () => ctx.api(`/admin/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" }))(event);
      });
      return el("span", {}, button, result);
    };
    const status = (key) => (key.revoked_at ? ["bad", "revoked"]
      : key.expires_at && key.expires_at <= now ? ["warn", "expired"] : ["good", "active"]);
    return el("div", {},
      secret ? el("div", { class: "panel secret", id: "new-key-secret", role: "alert" },
        el("p", {}, `Key ${secret.key.id} (${secret.key.prefix}…) for tenant ${secret.key.tenant}, role ${secret.key.role}. Its secret, shown this once — copy it now:`),
        el("pre", { class: "code" }, secret.secret)) : null,
      table([
        { key: "id", label: "Id" },
        { key: "prefix", label: "Prefix" },
        { key: "tenant", label: "Tenant" },
        { key: "role", label: "Role" },
        { key: "name", label: "Name" },
        { key: "tier", label: "Tier" },
        { key: "scopes", label: "Models", format: (v) => v.join(", ") || "all" },
        { key: "created_at", label: "Created", format: (v) => fmt.dateTime(v) },
        { key: "expires_at", label: "Expires", format: (v) => (v ? fmt.dateTime(v) : "never") },
        { key: "revoked_at", label: "State", format: (v, key) => el("span", { class: `badge ${status(key)[0]}` }, status(key)[1]) },
        ...(admin ? [{ key: "actions", label: "", format: (v, key) => (key.revoked_at ? "" : revoke(key)) }] : []),
      ], answer.data, { empty: "No keys yet.", rowAttrs: (k) => ({ "data-key-id": k.id }) }),
      admin ? createForm(ctx) : null);
  });
}

function createForm(ctx) {
  const { el } = ctx.helpers;
  const result = el("div", { class: "action-result" });
  const text = (name, placeholder, required = false) =>
    el("input", { type: "text", name, id: `key-${name}`, placeholder, required, size: 14 });
  const choice = (name, values, chosen) => el("select", { name, id: `key-${name}` },
    values.map((v) => el("option", { value: v, selected: v === chosen }, v)));
  const form = el("form", { class: "inline", id: "key-create", on: { submit: async (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    const body = { tenant: data.get("tenant").trim(), name: data.get("name").trim(), role: data.get("role"),
      tier: data.get("tier") };
    const scopes = data.get("scopes").split(",").map((s) => s.trim()).filter(Boolean);
    if (scopes.length) body.scopes = scopes;
    const feature = data.get("feature").trim();
    if (feature) body.feature = feature;
    const days = Number(data.get("days"));
    if (data.get("days").trim()) body.expires_in_s = days * 86400;
    const submit = event.target.querySelector("button[type=submit]");
    submit.disabled = true;
    result.replaceChildren();
    try {
      ctx.state.secret = await ctx.api("/admin/keys", { method: "POST", body });
    } catch (error) {
      if (error.status === 401) return;
      result.replaceChildren(ctx.helpers.errorBox(error));
      submit.disabled = false;
      return;
    }
    ctx.refresh();
  } } },
  el("label", {}, "Tenant", text("tenant", "acme", true)),
  el("label", {}, "Name", text("name", "web-app", true)),
  el("label", {}, "Role", choice("role", ["client", "viewer", "operator", "approver", "admin"], "client")),
  el("label", {}, "Tier", choice("tier", ["interactive", "standard", "batch"], "standard")),
  el("label", {}, "Models (comma-separated; empty: all)", text("scopes", "chat")),
  el("label", {}, "Feature", text("feature", "optional")),
  el("label", {}, "Expires in days", el("input", { type: "number", name: "days", id: "key-days", min: "0.01", step: "any", placeholder: "never", size: 6 })),
  el("button", { type: "submit", class: "primary" }, "Create key"));
  return el("div", {}, el("h3", {}, "New key"), form, result);
}
