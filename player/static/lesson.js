// Lesson page (/catalog/{id}): plays a recorded lesson (HLS: native or hls.js, see
// playback.js) with speed control, keyboard shortcuts and a download link, beside the
// lesson's details. Every failure (unknown lesson, expired token, server down, a video the
// browser cannot play) ends as a message in the page.

import * as i18n from "./i18n.js";
import { ApiError, clock, dateTime, getLesson, LAST_SEARCH_KEY } from "./lessons.js";
import { lessonFromPath, pageLink, tokenFromUrl } from "./params.js";
import { attach } from "./playback.js";

const SEEK_S = 10;
const FEEDBACK_MS = 1200;

const lessonId = lessonFromPath();
const token = tokenFromUrl();
const engineAsked = new URLSearchParams(location.search).get("engine") || "auto";
/** The page's elements by id (typed loosely: each page knows what its ids are). */
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);
const els = {
  lang: $("lang"), home: $("home-link"), back: $("back"), loading: $("loading"),
  problem: $("problem"), problemText: $("problem-text"), problemDetail: $("problem-detail"),
  retry: $("retry"), problemBack: $("problem-back"), content: $("content"), frame: $("frame"),
  player: $("player"), feedback: $("feedback"), speed: $("speed"), download: $("download"),
  tools: $("tools"), keys: $("keys"),
  title: $("lesson-title"), notice: $("lesson-notice"), facts: $("facts"),
  descriptionBlock: $("description-block"), description: $("description"),
  tagsBlock: $("tags-block"), tags: $("tags"),
  questions: $("questions"), questionsEmpty: $("questions-empty"),
};

let data = null; // {lesson, playback, questions} from the API
let problem = null; // {kind, key, detail, retry}
let playback = null; // from playback.attach
let feedback = null; // {key, vars}
let feedbackTimer = null;

const t = (key, vars) => i18n.t(key, vars);

// --- loading -------------------------------------------------------------------------------

async function load() {
  problem = null;
  setState("loading");
  render();
  try {
    data = await getLesson(lessonId, token);
  } catch (err) {
    data = null;
    fail(describe(err));
    return;
  }
  setState("ready");
  render();
  if (data.lesson.status !== "missing") await startPlayback();
}

function describe(err) {
  const status = err instanceof ApiError ? err.status : -1;
  const detail = err?.detail || err?.message || String(err);
  if (status === 404) return { kind: "notfound", key: "lesson.notfound", detail: "", retry: false };
  if (status === 401) return { kind: "auth", key: "error.auth", detail, retry: false };
  if (status === 403) return { kind: "forbidden", key: "error.forbidden", detail, retry: false };
  if (status === 0) return { kind: "network", key: "error.network", detail, retry: true };
  console.error("loading the lesson failed:", err);
  return { kind: "server", key: "error.server", detail, retry: true };
}

function fail(next) {
  problem = next;
  setState("error", next.kind);
  render();
}

function setState(state, error = "") {
  document.body.dataset.state = state;
  document.body.dataset.error = error;
}

async function startPlayback() {
  const { playback: urls } = data;
  if (urls.thumbnail) els.player.poster = urls.thumbnail;
  try {
    playback = await attach(els.player, urls.playlist, {
      engine: engineAsked,
      onEngine: (engine) => { els.player.dataset.engine = engine; },
      onError: playbackFailed,
    });
  } catch (err) {
    playbackFailed(err);
  }
}

function playbackFailed(err) {
  console.warn("playback failed:", err);
  if (err?.kind === "network" && err.status === 401) {
    fail({ kind: "auth", key: "error.auth", detail: err.message, retry: false });
  } else if (err?.kind === "network" && err.status === 404) {
    fail({ kind: "notfound", key: "lesson.missing", detail: err.message, retry: false });
  } else if (err?.kind === "network") {
    fail({ kind: "network", key: "error.network", detail: err.message, retry: true });
  } else if (err?.kind === "unsupported") {
    fail({ kind: "unsupported", key: "lesson.error.unsupported", detail: err.message,
           retry: false });
  } else {
    fail({ kind: "media", key: "lesson.error.media", detail: "",
           vars: { message: err?.message || String(err) }, retry: true });
  }
}

// --- rendering ------------------------------------------------------------------------------

function backLink() {
  let stored = "";
  try {
    stored = sessionStorage.getItem(LAST_SEARCH_KEY) || "";
  } catch {
    // storage blocked: back to an empty search
  }
  const params = new URLSearchParams(stored);
  if (token) params.set("token", token);
  params.set("lang", i18n.getLang());
  return `/catalog?${params}`;
}

function render() {
  const lang = i18n.getLang();
  els.home.href = pageLink("/", { token, lang });
  els.back.href = backLink();
  els.problemBack.href = els.back.href;
  els.loading.hidden = document.body.dataset.state !== "loading";

  els.problem.hidden = !problem;
  els.problem.dataset.kind = problem?.kind ?? "";
  els.problemText.textContent = problem ? t(problem.key, problem.vars) : "";
  els.problemDetail.textContent = problem?.detail ? t("error.detail", { message: problem.detail })
    : "";
  els.retry.hidden = !problem?.retry;

  // Details stay on screen when only the video failed.
  els.content.hidden = !data;
  if (!data) {
    document.title = `${t("nav.catalog")} · ClassCast`;
    return;
  }
  const { lesson, playback: urls } = data;
  const title = lesson.title || lesson.id;
  document.title = `${title} · ${t("nav.catalog")}`;
  els.title.textContent = title;
  els.player.setAttribute("aria-label", t("lesson.video.label", { title }));
  // Nothing to play: no player, tools or shortcuts, only the details and why.
  for (const el of [els.frame, els.tools, els.keys]) el.hidden = lesson.status === "missing";
  els.download.href = urls.download;
  const notice = lesson.status === "missing" ? "lesson.missing"
    : lesson.status === "interrupted" ? "lesson.interrupted" : "";
  els.notice.hidden = !notice;
  els.notice.textContent = notice ? t(notice) : "";

  const facts = [
    ["lesson.teacher", lesson.teacher], ["lesson.school", lesson.school],
    ["lesson.county", lesson.county], ["lesson.subject", lesson.subject],
    ["lesson.grade", lesson.grade && i18n.gradeLabel(lesson.grade)],
    ["lesson.date", dateTime(lesson.started_at, lang)],
    ["lesson.duration", clock(lesson.duration_s)],
  ].filter(([, value]) => value);
  els.facts.replaceChildren(...facts.flatMap(([key, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = t(key);
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.fact = key.split(".")[1];
    return [dt, dd];
  }));
  els.descriptionBlock.hidden = !lesson.description;
  els.description.textContent = lesson.description || "";
  els.tagsBlock.hidden = !(lesson.tags?.length);
  els.tags.replaceChildren(...(lesson.tags ?? []).map((tag) => {
    const li = document.createElement("li");
    li.className = "badge";
    li.textContent = tag;
    return li;
  }));
  renderQuestions(data.questions, lesson.started_at);
  renderFeedback();
}

/** The classrooms' raised hands and questions, with when in the lesson they came. */
function renderQuestions(questions, startedAt) {
  const list = questions ?? [];
  els.questionsEmpty.hidden = list.length > 0;
  els.questionsEmpty.textContent = t(questions === null ? "lesson.questions.unavailable"
    : "lesson.questions.empty");
  els.questions.replaceChildren(...list.map((q) => {
    const li = document.createElement("li");
    li.dataset.answered = String(q.answered);
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = `${q.classroom} · ${clock(Math.max(0, q.asked_at - startedAt))} · ${
      t(q.answered ? "lesson.question.answered" : "lesson.question.open")}`;
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = q.text || t("lesson.question.hand");
    li.append(text, who);
    return li;
  }));
}

function renderFeedback() {
  els.feedback.hidden = !feedback;
  els.feedback.textContent = feedback ? t(feedback.key, feedback.vars) : "";
}

/** A short note over the video of what a key did (also read out by screen readers). */
function flash(key, vars = {}) {
  feedback = { key, vars };
  clearTimeout(feedbackTimer);
  feedbackTimer = setTimeout(() => {
    feedback = null;
    renderFeedback();
  }, FEEDBACK_MS);
  renderFeedback();
}

// --- controls -------------------------------------------------------------------------------

function togglePlay() {
  const video = els.player;
  if (video.paused || video.ended) {
    video.play().catch((err) => {
      if (err.name !== "AbortError") console.warn("play() refused:", err);
    });
    flash("lesson.feedback.play");
  } else {
    video.pause();
    flash("lesson.feedback.pause");
  }
}

function seek(delta) {
  const video = els.player;
  const end = Number.isFinite(video.duration) ? video.duration : Infinity;
  video.currentTime = Math.min(Math.max(0, video.currentTime + delta), end);
  flash("lesson.feedback.seek", { sign: delta < 0 ? "−" : "+", time: clock(video.currentTime) });
}

function toggleMute() {
  els.player.muted = !els.player.muted;
  flash(els.player.muted ? "lesson.feedback.muted" : "lesson.feedback.unmuted");
}

function toggleFullscreen() {
  if (document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  } else if (els.frame.requestFullscreen) {
    els.frame.requestFullscreen().catch((err) => console.warn("full screen refused:", err));
  } else {
    els.player.webkitEnterFullscreen?.(); // iPhone Safari: only the video itself
  }
}

function setSpeed(rate) {
  els.player.playbackRate = rate;
  els.player.defaultPlaybackRate = rate;
}

/** Which shortcut a key press is, or null when it belongs to the focused control. */
function shortcut(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return null;
  if (!data || data.lesson.status === "missing" || els.content.hidden) return null;
  const target = event.target instanceof Element ? event.target : document.body;
  const typing = target.closest("input, select, textarea, [contenteditable]");
  const control = target.closest("button, a, summary");
  switch (event.key) {
    case " ":
    case "Spacebar":
      return typing || control ? null : togglePlay;
    case "ArrowLeft":
      return typing ? null : () => seek(-SEEK_S);
    case "ArrowRight":
      return typing ? null : () => seek(SEEK_S);
    case "f":
    case "F":
      return typing ? null : toggleFullscreen;
    case "m":
    case "M":
      return typing ? null : toggleMute;
    default:
      return null;
  }
}

function init() {
  i18n.apply();
  i18n.bindToggle(els.lang, render);
  document.addEventListener("keydown", (event) => {
    const action = shortcut(event);
    if (!action) return;
    event.preventDefault(); // no page scroll, and the video's own key handling stays out
    action();
  });
  els.speed.addEventListener("change", () => setSpeed(Number(els.speed.value)));
  els.player.addEventListener("ratechange", () => {
    const option = [...els.speed.options].find((o) => Number(o.value) === els.player.playbackRate);
    if (option) els.speed.value = option.value;
  });
  els.retry.addEventListener("click", () => {
    playback?.destroy();
    playback = null;
    load();
  });
  window.classcast = {
    get lesson() { return data?.lesson ?? null; },
    get playback() { return playback; },
  };
  if (!token) {
    fail({ kind: "token", key: "token.missing", detail: "", retry: false });
    return;
  }
  if (!lessonId) {
    fail({ kind: "notfound", key: "lesson.notfound", detail: "", retry: false });
    return;
  }
  load();
}

init();
