// Home page (/): the live rooms from GET /api/rooms, refreshed every few seconds, with links
// (carrying the token and language) to each classroom screen and teacher console.

import * as i18n from "./i18n.js";
import { pageLink, tokenFromUrl } from "./params.js";

const REFRESH_MS = 5000;

const token = tokenFromUrl();
/** The page's elements by id (typed loosely: each page knows what its ids are). */
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);
const els = {
  lang: $("lang"), tokenForm: $("token-form"), tokenInput: $("token-input"),
  status: $("rooms-status"), rooms: $("rooms"), openForm: $("open-form"), openRoom: $("open-room"),
  catalog: $("catalog-link"),
};

let rooms = null; // the last answer of /api/rooms
let problem = null; // {key, vars} when the last load failed

async function load() {
  try {
    const response = await fetch("/api/rooms", {
      headers: { Authorization: `Bearer ${token}` }, cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.message || `${response.status}`);
    rooms = body.rooms ?? [];
    problem = null;
  } catch (err) {
    problem = { key: "home.error", vars: { message: err.message } };
  }
  render();
}

function render() {
  const lang = i18n.getLang();
  els.catalog.href = pageLink("/catalog", { token, lang });
  if (problem) {
    els.status.textContent = i18n.t(problem.key, problem.vars);
  } else if (rooms === null) {
    els.status.textContent = i18n.t("home.loading");
  } else {
    els.status.textContent = rooms.length ? "" : i18n.t("home.empty");
  }
  els.rooms.replaceChildren(...(rooms ?? []).map((room) => roomItem(room, lang)));
}

function roomItem(room, lang) {
  const li = document.createElement("li");
  li.className = "room card";
  li.dataset.room = room.name;
  const name = document.createElement("h3");
  name.textContent = room.name;
  const badge = document.createElement("span");
  badge.className = room.live ? "badge live" : "badge";
  badge.textContent = i18n.t(room.live ? "home.live" : "home.waiting");
  name.append(" ", badge);
  const facts = document.createElement("p");
  const parts = [i18n.t("home.viewers", { count: room.subscriber_count ?? 0 })];
  if (room.live_since) {
    const time = new Date(room.live_since * 1000).toLocaleTimeString(
      lang === "zh" ? "zh-CN" : "en", { hour: "2-digit", minute: "2-digit" });
    parts.unshift(i18n.t("home.since", { time }));
  }
  facts.textContent = parts.join(" · ");
  const links = document.createElement("p");
  links.className = "buttons";
  const path = encodeURIComponent(room.name);
  links.append(link(`/class/${path}`, "home.watch", "button primary", lang),
               link(`/teach/${path}`, "home.teach", "button", lang));
  li.append(name, facts, links);
  return li;
}

function link(path, key, className, lang) {
  const a = document.createElement("a");
  a.href = pageLink(path, { token, lang });
  a.className = className;
  a.textContent = i18n.t(key);
  return a;
}

function init() {
  i18n.apply();
  i18n.bindToggle(els.lang, render);
  els.catalog.href = pageLink("/catalog", { token, lang: i18n.getLang() });
  els.openForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const page = event.submitter?.value === "teach" ? "teach" : "class";
    location.assign(pageLink(`/${page}/${encodeURIComponent(els.openRoom.value.trim())}`,
                             { token, lang: i18n.getLang() }));
  });
  if (!token) {
    els.tokenForm.hidden = false;
    els.tokenForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const url = new URL(location.href);
      url.searchParams.set("token", els.tokenInput.value.trim());
      location.assign(url);
    });
    return;
  }
  render();
  load();
  setInterval(load, REFRESH_MS);
}

init();
