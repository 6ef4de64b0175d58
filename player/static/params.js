// What a page was opened with: the room or lesson (from its path) and the token (from ?token=).

/** The second part of a path: the room of /class/{room}, the lesson of /catalog/{id}. */
function pathName(pathname) {
  const parts = pathname.split("/").filter(Boolean);
  return parts.length >= 2 ? decodeURIComponent(parts[1]) : "";
}

/** The room name from /class/{room} or /teach/{room}. */
export function roomFromPath(pathname = location.pathname) {
  return pathName(pathname);
}

/** The lesson id from /catalog/{id}. */
export function lessonFromPath(pathname = location.pathname) {
  return pathName(pathname);
}

/** The bearer token the page was given in ?token= (empty if none). */
export function tokenFromUrl(search = location.search) {
  return new URLSearchParams(search).get("token") || "";
}

/** A link to another page that carries the token and language along. */
export function pageLink(path, { token = tokenFromUrl(), lang = "" } = {}) {
  const url = new URL(path, location.origin);
  if (token) url.searchParams.set("token", token);
  if (lang) url.searchParams.set("lang", lang);
  return url.pathname + url.search;
}
