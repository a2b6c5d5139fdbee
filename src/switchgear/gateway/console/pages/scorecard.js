// Scorecard: the eight categories `switchgear scorecard` scores, each with the evidence it saw
// and what would raise it, from GET /admin/scorecard (admins: the evidence spans every tenant).

export const title = "Scorecard";
export const roles = ["admin"];
export const refresh = 120;

function kind(score, max) {
  return score >= max ? "good" : score > 0 ? "warn" : "bad";
}

export async function render(root, ctx) {
  const { el, table, stat, section, meter, badge, fmt } = ctx.helpers;
  const card = await ctx.api("/admin/scorecard");
  root.append(el("div", { class: "stats" },
    stat("total", "Total", card.total, `${card.total} / ${card.max}`),
    stat("at_risk", "Verdict", card.at_risk ? 1 : 0, card.at_risk ? "AI spending risk" : "no risk flag")));
  root.append(el("p", {}, badge(card.verdict, card.at_risk ? "bad" : "good")));
  root.append(section("Evidence read", el("ul", { class: "sources" },
    card.sources.map((line) => el("li", {}, line))),
  el("p", { class: "note" }, `Records over the last ${fmt.number(card.window_s / 86400, 1)} days; 0 unclear, 1 partly defined, 2 disciplined and measured.`)));
  root.append(section("Categories", table([
    { key: "title", label: "category" },
    { key: "score", label: "score", numeric: true, format: (v, row) => el("span", {}, meter(v / row.max, kind(v, row.max)), ` ${v} / ${row.max}`) },
    { key: "to_raise", label: "to raise it", format: (v) => (v.length ? v[0] + (v.length > 1 ? ` (+${v.length - 1} more)` : "") : "—") },
  ], card.categories, { rowAttrs: (row) => ({ "data-category": row.key }) })));
  for (const category of card.categories) {
    root.append(section(`${category.title}: ${category.score} / ${category.max}`,
      el("h3", {}, "Evidence"),
      el("ul", {}, category.evidence.map((line) => el("li", {}, line))),
      category.to_raise.length ? [el("h3", {}, "What would raise it"), el("ul", {}, category.to_raise.map((line) => el("li", {}, line)))]
        : el("p", { class: "note" }, "At the top score.")));
  }
}
