// The catalog API client and the search state the catalog page keeps in its address.
//
// DOM-free on purpose (only fetch, URL, URLSearchParams and Intl), like whip.js: the pages
// hold the UI, this module the protocol.
//
//   const state = searchFromUrl(location.search);        // {q, subject, …, sort, page}
//   const page = await searchLessons(state, token);      // {lessons, total, facets, …}
//   const {lesson, playback} = await getLesson(id, token);
//
// Failures throw an ApiError: `status` is the HTTP status, or 0 when the server could not be
// reached; `code` and `message` come from the server's JSON error body when it sent one.

/** Lessons per page of results (divides into rows of 2, 3 and 4 cards). */
export const PAGE_SIZE = 12;

/** The facets the catalog counts, in the order the page shows them. */
export const FACETS = ["subject", "grade", "school", "county"];

/** The sort orders the API knows; "relevance" only means something with search text. */
export const SORTS = ["relevance", "newest", "oldest", "longest", "title"];

/** Where the catalog page leaves its last search (sessionStorage) for the lesson page's "back". */
export const LAST_SEARCH_KEY = "classcast.catalog.search";

const TEXT_FIELDS = ["q", ...FACETS, "from", "to", "sort"];
const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** A failed catalog request. */
export class ApiError extends Error {
  constructor(status, message, code = "") {
    super(status ? `${status}: ${message}` : message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.detail = message;
  }
}

/** An empty search: every lesson, newest first. */
export function emptySearch() {
  return { q: "", subject: "", grade: "", school: "", county: "", from: "", to: "", sort: "",
           page: 1 };
}

/** The search in an address's query (unknown or malformed values are dropped). */
export function searchFromUrl(search) {
  const params = new URLSearchParams(search);
  const state = emptySearch();
  for (const name of TEXT_FIELDS) state[name] = (params.get(name) || "").trim();
  if (!SORTS.includes(state.sort)) state.sort = "";
  for (const name of ["from", "to"]) if (!DATE.test(state[name])) state[name] = "";
  const page = Number.parseInt(params.get("page") || "1", 10);
  state.page = Number.isFinite(page) && page > 0 ? page : 1;
  return state;
}

/**
 * `base` (an address's query) with the search written into it: empty fields and page 1 are
 * left out so shared links stay short; other parameters (token, lang) are kept.
 */
export function searchToUrl(state, base = "") {
  const params = new URLSearchParams(base);
  for (const name of [...TEXT_FIELDS, "page"]) params.delete(name);
  for (const name of TEXT_FIELDS) if (state[name]) params.set(name, state[name]);
  if (state.page > 1) params.set("page", String(state.page));
  return params;
}

/** The API parameters of a search (its page turned into limit and offset). */
export function apiParams(state, { limit = PAGE_SIZE } = {}) {
  const params = new URLSearchParams();
  for (const name of TEXT_FIELDS) if (state[name]) params.set(name, state[name]);
  params.set("limit", String(limit));
  params.set("offset", String((Math.max(1, state.page) - 1) * limit));
  return params;
}

/**
 * @param {string} path
 * @param {string} token
 * @param {{signal?: AbortSignal}} [options]
 */
async function request(path, token, { signal = undefined } = {}) {
  let response;
  try {
    response = await fetch(path, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      cache: "no-store", signal,
    });
  } catch (err) {
    if (err?.name === "AbortError") throw err;
    throw new ApiError(0, err?.message || "the server cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // a proxy's HTML error page, or an empty body
  }
  if (!response.ok) {
    throw new ApiError(response.status, body?.message || response.statusText || "request failed",
                       body?.error || "");
  }
  if (body === null) throw new ApiError(response.status, "the server sent no JSON");
  return body;
}

/** One page of search results: {lessons, total, facets, limit, offset, sort}. */
/**
 * @param {any} state
 * @param {string} token
 * @param {{signal?: AbortSignal, limit?: number}} [options]
 */
export function searchLessons(state, token, { signal = undefined, limit = PAGE_SIZE } = {}) {
  return request(`/api/lessons?${apiParams(state, { limit })}`, token, { signal });
}

/** One lesson and its playback URLs: {lesson, playback: {playlist, thumbnail, download}}. */
/**
 * @param {string} id
 * @param {string} token
 * @param {{signal?: AbortSignal}} [options]
 */
export function getLesson(id, token, { signal = undefined } = {}) {
  return request(`/api/lessons/${encodeURIComponent(id)}`, token, { signal });
}

/** "1:02:03" or "40:00" (what players show). */
export function clock(seconds) {
  const total = Math.max(0, Math.floor(Number(seconds) || 0)); // whole seconds, as players count
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

/** The BCP 47 locale of a page language. */
export function locale(lang) {
  return lang === "zh" ? "zh-CN" : "en";
}

/** A lesson's start as a local date and time ("2026年9月1日 08:00" / "Sep 1, 2026, 08:00"). */
export function dateTime(epochSeconds, lang) {
  return new Date(epochSeconds * 1000).toLocaleString(locale(lang), {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}
