// Example questions built from a dataset's own columns, and how its types read.
//
// The same candidates, in the same order, as the rules planner's own examples
// (services/analysis_worker/.../planner/rules.py, `example_questions`), so every question
// offered here is one the offline planner answers; tests/planner/test_ui_examples.py runs
// this module on the planner's datasets and plans each question. Pure: no DOM.

const NUMERIC = /^(TINYINT|SMALLINT|INTEGER|INT\d*|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT\d*|REAL|DOUBLE|DECIMAL|NUMERIC)\b/;
const TEMPORAL = /^(DATE|TIMESTAMP|DATETIME)/;
const TEXT = new Set(["VARCHAR", "TEXT", "STRING", "CHAR", "BPCHAR", "UUID", "ENUM"]);
const ID_WORDS = new Set(["id", "uuid", "key", "code", "guid"]);
const PRIMARY_WORDS = new Set(["revenue", "sale", "sales", "amount", "turnover", "profit",
  "income", "fare"]);
// Text columns that label single rows make poor groupings ("total salary by name").
const LABELS = new Set(["name", "email", "description", "comment", "note", "address", "title",
  "url", "phone"]);
const SINGULAR_KEEP = ["ss", "us", "is", "ics", "ous"];
const EXAMPLES = 3;

/** "number" | "date" | "text" | "bool" | "other", as the planner reads a DuckDB type. */
export function columnKind(type) {
  const t = String(type || "").trim().toUpperCase();
  if (NUMERIC.test(t)) return "number";
  if (TEMPORAL.test(t)) return "date";
  if (TEXT.has(t) || t.startsWith("VARCHAR") || t.startsWith("ENUM")) return "text";
  if (t === "BOOLEAN" || t === "BOOL") return "bool";
  return "other";
}

/** A short, readable type: "whole number", "decimal", "date", "text", ... */
export function typeLabel(type) {
  const t = String(type || "").trim().toUpperCase();
  if (/^(TINYINT|SMALLINT|INTEGER|INT\d*|BIGINT|HUGEINT|U\w*INT\w*)\b/.test(t)) return "whole number";
  if (NUMERIC.test(t)) return "decimal";
  if (/^(TIMESTAMP|DATETIME)/.test(t)) return "date and time";
  if (t.startsWith("DATE")) return "date";
  if (t === "TIME") return "time";
  const kind = columnKind(t);
  return kind === "bool" ? "yes / no" : kind === "text" ? "text" : t.toLowerCase() || "unknown";
}

function singular(word) {
  const w = word.toLowerCase();
  if (w === "ids") return "id";
  if (w.length <= 3 || SINGULAR_KEEP.some((end) => w.endsWith(end))) return w;
  if (w.endsWith("ies")) return `${w.slice(0, -3)}y`;
  if (["sses", "xes", "ches", "shes"].some((end) => w.endsWith(end))) return w.slice(0, -2);
  if (w.endsWith("s")) return w.slice(0, -1);
  return w;
}

function nameWords(name) {
  const spaced = String(name).replace(/(?<=[a-z0-9])(?=[A-Z])/g, " ");
  return spaced.split(/[^A-Za-z0-9]+/).filter(Boolean).map(singular);
}

/** How a user would type a column's name: "unit_price" -> "unit price". */
export function label(name) {
  return String(name).split(/[^A-Za-z0-9]+/).filter(Boolean).join(" ") || String(name);
}

export function plural(word) {
  if (word.endsWith("y") && !"aeiou".includes(word.slice(-2, -1))) return `${word.slice(0, -1)}ies`;
  return word + (["s", "x", "ch", "sh"].some((end) => word.endsWith(end)) ? "es" : "s");
}

function refs(columns) {
  return (columns || []).map((c, i) => {
    const words = nameWords(c.name);
    const kind = columnKind(c.type);
    const isId = words.length > 0 && ID_WORDS.has(words[words.length - 1]);
    return { i, name: c.name, kind, words, isId, isMeasure: kind === "number" && !isId,
      label: label(c.name) };
  });
}

/** Up to three questions about this table that the rules planner answers. */
export function exampleQuestions(columns, sampleRows = []) {
  const cols = refs(columns);
  const measures = cols.filter((c) => c.isMeasure && !(c.words.length === 1 && c.words[0] === "year"));
  const primaries = measures.filter((c) => c.words.some((w) => PRIMARY_WORDS.has(w)));
  const measure = (primaries.length === 1 ? primaries[0] : null) || measures[0] || null;
  // A text column to group by: one with values seen first, row labels last, never an id.
  const seen = (c) => (sampleRows || []).some((r) => typeof r[c.i] === "string" && r[c.i].trim());
  const texts = cols.filter((c) => c.kind === "text" && !c.isId)
    .map((c, order) => ({ c, order, key: [seen(c) ? 0 : 1, c.words.some((w) => LABELS.has(w)) ? 1 : 0] }))
    .sort((a, b) => a.key[0] - b.key[0] || a.key[1] - b.key[1] || a.order - b.order);
  const category = texts.length ? texts[0].c : null;
  const date = cols.find((c) => c.kind === "date") || null;
  const out = [];
  if (measure && category) out.push(`total ${measure.label} by ${category.label}`);
  if (measure && date) out.push(`total ${measure.label} by month`);
  if (measure && category) out.push(`top 5 ${plural(category.label)} by ${measure.label}`);
  if (category) out.push(`number of rows by ${category.label}`);
  if (measure) out.push(`average ${measure.label}`);
  out.push("how many rows are there");
  return out.slice(0, EXAMPLES);
}
