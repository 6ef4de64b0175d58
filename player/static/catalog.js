// Catalog page (/catalog): search recorded lessons, narrow them with facet filters (subject,
// grade, school, county) and a date range, sort, and page through result cards. The whole
// search lives in the address (?q=分数&subject=数学&page=2…), so a search can be shared and
// the back button steps through earlier searches.

import * as i18n from "./i18n.js";
import {
  ApiError, clock, dateTime, emptySearch, FACETS, LAST_SEARCH_KEY, PAGE_SIZE,
  searchFromUrl, searchLessons, searchToUrl,
} from "./lessons.js";
import { pageLink, tokenFromUrl } from "./params.js";

/** Facet values shown before "show all". */
const FACET_PREVIEW = 8;

const token = tokenFromUrl();
/** The page's elements by id (typed loosely: each page knows what its ids are). */
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);
const els = {
  lang: $("lang"), home: $("home-link"), form: $("search"), q: $("q"), facets: $("facets"),
  from: $("from"), to: $("to"), clear: $("clear"), sort: $("sort"), status: $("status"),
  lessons: $("lessons"), paging: $("paging"), prev: $("prev"), next: $("next"), page: $("page"),
  problem: $("problem"), problemText: $("problem-text"), problemDetail: $("problem-detail"),
  retry: $("retry"), resultsTitle: $("results-title"), filters: $("filters"),
};

let state = searchFromUrl(location.search);
let results = null; // {page, counts}: the last answer
let problem = null; // {key, detail, retry, kind}
let loading = false;
let inFlight = null; // AbortController of the running search
const expanded = new Set(); // facets showing all their values

const t = (key, vars) => i18n.t(key, vars);

function facetLabel(name, value) {
  return name === "grade" ? i18n.gradeLabel(value) : value;
}

// --- loading -------------------------------------------------------------------------------

async function load() {
  inFlight?.abort();
  const controller = new AbortController();
  inFlight = controller;
  loading = true;
  document.body.dataset.state = "loading";
  render();
  try {
    const page = await searchLessons(state, token, { signal: controller.signal });
    const pages = Math.max(1, Math.ceil(page.total / PAGE_SIZE));
    if (state.page > pages && page.total > 0) {
      // A shared link to a page that no longer exists: show the last one instead.
      state = { ...state, page: pages };
      history.replaceState(null, "", `?${searchToUrl(state, location.search)}`);
      inFlight = null;
      load();
      return;
    }
    // each facet is counted without its own filter, so a chosen facet lists its other values
    results = { page, counts: page.facets ?? {} };
    problem = null;
  } catch (err) {
    if (err?.name === "AbortError") return;
    results = null;
    problem = describe(err);
    if (problem.kind === "other") console.error("catalog search failed:", err);
  } finally {
    if (inFlight === controller) {
      inFlight = null;
      loading = false;
    }
  }
  document.body.dataset.state = problem ? "error" : "ready";
  render();
}

/** What to tell the user about a failed request. */
function describe(err) {
  const status = err instanceof ApiError ? err.status : -1;
  const detail = err?.detail || err?.message || String(err);
  if (status === 401) return { kind: "auth", key: "error.auth", detail, retry: false };
  if (status === 403) return { kind: "forbidden", key: "error.forbidden", detail, retry: false };
  if (status === 400) return { kind: "bad", key: "error.bad", detail, retry: false };
  if (status === 0) return { kind: "network", key: "error.network", detail, retry: true };
  if (status >= 500) return { kind: "server", key: "error.server", detail, retry: true };
  return { kind: "other", key: "error.server", detail, retry: true };
}

/** Record the search in the address (a new history entry) and run it. */
function navigate({ focusResults = false } = {}) {
  const query = searchToUrl(state, location.search).toString();
  if (`?${query}` !== location.search) history.pushState(null, "", `?${query}`);
  remember();
  load().then(() => {
    if (focusResults) {
      els.resultsTitle.focus();
      els.resultsTitle.scrollIntoView({ block: "start" });
    }
  });
}

function remember() {
  try {
    sessionStorage.setItem(LAST_SEARCH_KEY, location.search);
  } catch {
    // storage blocked: the lesson page links back to an empty search
  }
}

// --- rendering ------------------------------------------------------------------------------

function render() {
  document.title = `${t("catalog.title")} · ClassCast`;
  els.home.href = pageLink("/", { token, lang: i18n.getLang() });
  document.body.setAttribute("aria-busy", String(loading));
  renderProblem();
  renderFacets();
  renderSort();
  renderLessons();
  renderPaging();
}

function renderProblem() {
  els.problem.hidden = !problem;
  els.problem.dataset.kind = problem?.kind ?? "";
  els.problemText.textContent = problem ? t(problem.key) : "";
  els.problemDetail.textContent = problem?.detail ? t("error.detail", { message: problem.detail })
    : "";
  els.retry.hidden = !problem?.retry;
  if (problem) {
    els.status.textContent = "";
  } else if (loading && !results) {
    els.status.textContent = t("catalog.loading");
  } else if (results) {
    const total = results.page.total;
    els.status.textContent = total === 0 ? t("catalog.empty")
      : total === 1 ? t("catalog.count.one") : t("catalog.count", { total });
  }
}

function renderFacets() {
  // Re-rendering replaces the radios: keep keyboard focus on the same choice.
  const active = /** @type {HTMLInputElement|null} */ (document.activeElement);
  const focused = active?.type === "radio" && els.facets.contains(active)
    ? { name: active.name, value: active.value } : null;
  const groups = [];
  for (const name of FACETS) {
    const counts = { ...(results?.counts?.[name] ?? {}) };
    if (state[name] && !(state[name] in counts)) counts[state[name]] = 0;
    const values = Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    if (!values.length) continue;
    groups.push(facetGroup(name, values));
  }
  els.facets.replaceChildren(...groups);
  if (focused) {
    const again = [...els.facets.querySelectorAll(`input[name="${focused.name}"]`)]
      .find((input) => input.value === focused.value);
    again?.focus();
  }
}

function facetGroup(name, values) {
  const fieldset = document.createElement("fieldset");
  fieldset.className = "facet";
  fieldset.dataset.facet = name;
  const legend = document.createElement("legend");
  legend.textContent = t(`catalog.facet.${name}`);
  fieldset.append(legend);
  const list = document.createElement("div");
  list.className = "chips";
  const showAll = expanded.has(name) || values.length <= FACET_PREVIEW + 1;
  const shown = showAll ? values : values.filter(([value], i) =>
    i < FACET_PREVIEW || value === state[name]);
  list.append(chip(name, "", t("catalog.facet.all"), null));
  for (const [value, count] of shown) list.append(chip(name, value, facetLabel(name, value), count));
  fieldset.append(list);
  if (values.length > FACET_PREVIEW + 1) {
    const more = document.createElement("button");
    more.type = "button";
    more.className = "ghost more";
    more.setAttribute("aria-expanded", String(showAll));
    more.textContent = showAll ? t("catalog.facet.less")
      : t("catalog.facet.more", { count: values.length });
    more.addEventListener("click", () => {
      if (expanded.has(name)) expanded.delete(name);
      else expanded.add(name);
      renderFacets();
      els.facets.querySelector(`[data-facet="${name}"] .more`)?.focus();
    });
    fieldset.append(more);
  }
  return fieldset;
}

function chip(name, value, label, count) {
  const wrap = document.createElement("label");
  wrap.className = "chip";
  const input = document.createElement("input");
  input.type = "radio";
  input.name = name;
  input.value = value;
  input.checked = state[name] === value;
  const text = document.createElement("span");
  text.className = "chip-face";
  text.append(label);
  if (count !== null) {
    const number = document.createElement("span");
    number.className = "count";
    number.textContent = String(count);
    text.append(" ", number);
    wrap.dataset.count = String(count);
  }
  wrap.dataset.value = value;
  wrap.append(input, text);
  return wrap;
}

function renderSort() {
  const relevance = els.sort.querySelector('option[value="relevance"]');
  relevance.disabled = !state.q;
  els.sort.value = state.sort && !(state.sort === "relevance" && !state.q) ? state.sort
    : results?.page.sort ?? (state.q ? "relevance" : "newest");
}

function renderLessons() {
  const lessons = results?.page.lessons ?? [];
  els.lessons.replaceChildren(...lessons.map(card));
}

function card(lesson) {
  const lang = i18n.getLang();
  const li = document.createElement("li");
  li.className = "lesson card";
  li.dataset.id = lesson.id;

  const thumb = document.createElement("div");
  thumb.className = "thumb";
  const placeholder = () => {
    const span = document.createElement("span");
    span.className = "placeholder";
    span.setAttribute("aria-hidden", "true");
    span.textContent = lesson.subject || "▶";
    return span;
  };
  const picture = lesson.playback?.thumbnail;
  if (picture) {
    const img = document.createElement("img");
    img.src = picture;
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("error", () => img.replaceWith(placeholder()), { once: true });
    thumb.append(img);
  } else {
    thumb.append(placeholder());
  }
  const duration = document.createElement("span");
  duration.className = "duration";
  const hidden = document.createElement("span");
  hidden.className = "visually-hidden";
  hidden.textContent = `${t("lesson.duration")} `;
  duration.append(hidden, clock(lesson.duration_s));
  thumb.append(duration);

  const title = document.createElement("h3");
  const link = document.createElement("a");
  link.href = pageLink(`/catalog/${encodeURIComponent(lesson.id)}`, { token, lang });
  link.textContent = lesson.title || lesson.id;
  title.append(link);

  const who = document.createElement("p");
  who.className = "meta";
  who.textContent = [lesson.teacher, lesson.school].filter(Boolean).join(" · ");

  const what = document.createElement("p");
  what.className = "meta";
  what.textContent = [lesson.subject, lesson.grade && i18n.gradeLabel(lesson.grade),
                      dateTime(lesson.started_at, lang)].filter(Boolean).join(" · ");

  li.append(title, thumb, who, what);
  if (lesson.status === "interrupted" || lesson.status === "missing") {
    const badge = document.createElement("span");
    badge.className = `badge ${lesson.status}`;
    badge.textContent = t(`catalog.status.${lesson.status}`);
    what.append(" ", badge);
  }
  return li;
}

function renderPaging() {
  const total = results?.page.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  els.paging.hidden = !results || pages <= 1;
  els.page.textContent = t("catalog.page", { page: Math.min(state.page, pages), pages });
  els.prev.disabled = state.page <= 1;
  els.next.disabled = state.page >= pages;
}

/** Put the search into the form (on load and when the back button changes it). */
function syncForm() {
  els.q.value = state.q;
  els.from.value = state.from;
  els.to.value = state.to;
  els.to.min = state.from;
  els.from.max = state.to;
}

// --- wiring ---------------------------------------------------------------------------------

function init() {
  i18n.apply();
  i18n.bindToggle(els.lang, () => {
    remember();
    render();
  });
  // Phones: the filters start folded so the results are on the first screen.
  if (matchMedia("(max-width: 760px)").matches) els.filters.open = false;
  syncForm();
  render();
  if (!token) {
    problem = { kind: "token", key: "token.missing", detail: "", retry: false };
    document.body.dataset.state = "error";
    render();
    return;
  }
  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    state = { ...state, q: els.q.value.trim(), page: 1 };
    navigate();
  });
  els.facets.addEventListener("change", (event) => {
    const input = event.target;
    if (input.type !== "radio") return;
    state = { ...state, [input.name]: input.value, page: 1 };
    navigate();
  });
  for (const input of [els.from, els.to]) {
    input.addEventListener("change", () => {
      if (input.value && !input.checkValidity()) return;
      state = { ...state, from: els.from.value, to: els.to.value, page: 1 };
      syncForm();
      navigate();
    });
  }
  els.sort.addEventListener("change", () => {
    state = { ...state, sort: els.sort.value, page: 1 };
    navigate();
  });
  els.clear.addEventListener("click", () => {
    state = emptySearch();
    syncForm();
    navigate();
  });
  els.prev.addEventListener("click", () => {
    state = { ...state, page: Math.max(1, state.page - 1) };
    navigate({ focusResults: true });
  });
  els.next.addEventListener("click", () => {
    state = { ...state, page: state.page + 1 };
    navigate({ focusResults: true });
  });
  els.retry.addEventListener("click", () => load());
  window.addEventListener("popstate", () => {
    state = searchFromUrl(location.search);
    syncForm();
    remember();
    load();
  });
  window.classcast = { get state() { return state; }, get results() { return results; } };
  remember();
  load();
}

init();
