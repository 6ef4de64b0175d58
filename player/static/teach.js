// Teacher console (/teach/{room}): camera + microphone preview, go live over WHIP, end the
// lesson, and re-publish by itself when the connection is lost.

import * as i18n from "./i18n.js";
import { pageLink, roomFromPath, tokenFromUrl } from "./params.js";
import { Backoff, connected, connectionLost, countdown, isAbort } from "./retry.js";
import { publish, WhipError } from "./whip.js";

const room = roomFromPath();
const token = tokenFromUrl();
const $ = (id) => document.getElementById(id);
const els = {
  title: $("title"), preview: $("preview"), state: $("state"), golive: $("golive"),
  end: $("end"), codec: $("codec"), lang: $("lang"), home: $("home-link"),
};

// What the state line shows: a key plus its placeholder values, re-rendered on language change.
let status = { state: "idle", key: "teach.state.idle", vars: {} };
let stream = null;
let session = null;
let lesson = null; // AbortController of the running lesson (Go live → End lesson)

function render() {
  document.title = `${t("teach.title", { room })} · ClassCast`;
  els.title.textContent = t("teach.title", { room });
  els.home.href = pageLink("/", { token, lang: i18n.getLang() });
  els.state.textContent = t(status.key, status.vars);
  els.state.dataset.state = status.state;
}

function t(key, vars) {
  return i18n.t(key, vars);
}

function show(state, key, vars = {}) {
  status = { state, key, vars };
  render();
}

let camera = null; // the getUserMedia promise, shared by the preview and Go live

function openCamera() {
  if (!camera) {
    show("camera", "teach.state.camera");
    camera = navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      audio: { echoCancellation: true, noiseSuppression: true },
    }).then((media) => {
      stream = media;
      els.preview.srcObject = media;
      return media;
    }, (err) => {
      camera = null; // let the next Go live ask again
      throw Object.assign(new Error(err.message || err.name), { camera: true });
    });
  }
  return camera;
}

async function goLive() {
  if (lesson) return;
  const controller = new AbortController();
  lesson = controller;
  els.golive.disabled = true;
  els.codec.disabled = true;
  els.end.disabled = false;
  try {
    await openCamera();
    await keepPublishing(controller.signal);
  } catch (err) {
    if (isAbort(err) || controller.signal.aborted) return;
    if (err.camera) {
      show("error", "teach.error.camera", { message: err.message });
    } else if (err instanceof WhipError && (err.status === 401 || err.status === 403)) {
      show("error", "teach.error.auth", { message: err.message });
    } else {
      show("error", "teach.error.other", { message: err.message || String(err) });
    }
    await dropSession();
    stopLesson();
  }
}

/** Errors a new attempt cannot fix: a bad token, a request the relay refuses, no codec. */
function fatal(err) {
  if (err instanceof TypeError) return true;
  return err instanceof WhipError && err.status >= 400 && err.status < 500 &&
    ![404, 408, 409, 429].includes(err.status);
}

/** Publish until the lesson is ended; after a lost connection, publish again with backoff. */
async function keepPublishing(signal) {
  const backoff = new Backoff();
  for (;;) {
    show("connecting", "teach.state.connecting");
    let busy = null;
    try {
      session = await publish(`/whip/${encodeURIComponent(room)}`, token, stream,
                              { videoCodec: els.codec.value || undefined });
      if (signal.aborted) throw signal.reason;
      await connected(session.pc, signal);
      show("live", "teach.state.live");
      backoff.reset();
      const why = await connectionLost(session.pc, { signal });
      console.info("publishing connection lost:", why);
    } catch (err) {
      if (isAbort(err) || signal.aborted) throw signal.reason ?? err;
      if (fatal(err)) throw err;
      console.warn("publishing failed:", err);
      // 409: the room has a teacher, usually our own previous session not yet timed out.
      if (err instanceof WhipError && err.status === 409) busy = err.retryAfter ?? backoff.next();
    }
    await dropSession();
    if (busy !== null) {
      await countdown(busy, (left) => show("busy", "teach.state.busy", { seconds: left }),
                      signal);
    } else {
      await countdown(backoff.next(),
                      (left) => show("reconnecting", "teach.state.reconnecting", { seconds: left }),
                      signal);
    }
  }
}

async function dropSession() {
  const old = session;
  session = null;
  if (old) await old.close();
}

function stopLesson() {
  lesson?.abort(new DOMException("the lesson was ended", "AbortError"));
  lesson = null;
  els.golive.disabled = false;
  els.codec.disabled = false;
  els.end.disabled = true;
}

async function endLesson() {
  stopLesson();
  await dropSession();
  show("ended", "teach.state.ended");
}

function init() {
  i18n.apply();
  i18n.bindToggle(els.lang, render);
  const codec = new URLSearchParams(location.search).get("codec");
  if (codec) {
    const wanted = codec.includes("/") ? codec : `video/${codec}`;
    const option = [...els.codec.options].find((o) => o.value.toLowerCase() === wanted.toLowerCase());
    if (option) els.codec.value = option.value;
  }
  render();
  if (!token) {
    show("error", "token.missing");
    els.golive.disabled = true;
    return;
  }
  els.golive.addEventListener("click", goLive);
  els.end.addEventListener("click", endLesson);
  // Leaving the page ends the session at once instead of after the relay's ICE timeout.
  window.addEventListener("pagehide", () => session?.close());
  openCamera().then(() => {
    if (!lesson) show("idle", "teach.state.idle");
  }, (err) => {
    if (!lesson) show("error", "teach.error.camera", { message: err.message });
  });
  window.classcast = { get session() { return session; }, get stream() { return stream; } };
}

init();
