// Classroom screen (/class/{room}): one big player that joins the lesson over WHEP by itself,
// waits while the lesson has not started (409 + Retry-After), reconnects when the connection
// is lost, and shows a small quality line from getStats().

import * as i18n from "./i18n.js";
import { pageLink, roomFromPath, tokenFromUrl } from "./params.js";
import { Backoff, connected, connectionLost, countdown, isAbort, wait } from "./retry.js";
import { play, WhipError } from "./whip.js";

const STATS_INTERVAL_MS = 1000;
const NO_SIGNAL_AFTER_S = 5; // no new frame this long while connected → "no picture"

const room = roomFromPath();
const token = tokenFromUrl();
const $ = (id) => document.getElementById(id);
const els = {
  title: $("title"), theatre: $("theatre"), player: $("player"), unmute: $("unmute"),
  state: $("state"), notice: $("notice"), quality: $("quality"), fullscreen: $("fullscreen"), lang: $("lang"),
  home: $("home-link"),
};

let status = { state: "connecting", key: "class.state.connecting", vars: {} };
let quality = null; // the last sample: {fps, kbps, lost, framesDecoded, audioPackets}
let session = null;

function t(key, vars) {
  return i18n.t(key, vars);
}

function render() {
  document.title = `${t("class.title", { room })} · ClassCast`;
  els.title.textContent = t("class.title", { room });
  els.home.href = pageLink("/", { token, lang: i18n.getLang() });
  els.state.textContent = t(status.key, status.vars);
  els.state.dataset.state = status.state;
  // Large text over the player, readable from the back of a classroom, while not live.
  els.notice.hidden = status.state === "live";
  els.notice.textContent = els.state.textContent;
  els.quality.textContent = quality ? t("class.quality", quality) : "";
  const full = document.fullscreenElement != null;
  els.fullscreen.textContent = t(full ? "class.fullscreen.exit" : "class.fullscreen");
  els.fullscreen.setAttribute("aria-pressed", String(full));
}

function show(state, key, vars = {}) {
  status = { state, key, vars };
  render();
}

/** Errors a new attempt cannot fix (a bad token, a request the relay refuses). */
function fatal(err) {
  return err instanceof WhipError && err.status >= 400 && err.status < 500 &&
    ![404, 408, 409, 429].includes(err.status);
}

/** Join, watch, and join again after any loss, for as long as the page is open. */
async function keepWatching(signal) {
  const backoff = new Backoff();
  for (;;) {
    show("connecting", "class.state.connecting");
    let waitS = null;
    let key = "class.state.reconnecting";
    let message = "";
    try {
      session = await play(`/whep/${encodeURIComponent(room)}`, token);
      attach(session.stream);
      await connected(session.pc, signal);
      show("live", "class.state.live");
      backoff.reset();
      const stats = watchStats(session.pc, signal);
      const why = await connectionLost(session.pc, { signal });
      stats.stop();
      console.info("classroom connection lost:", why);
    } catch (err) {
      if (isAbort(err) || signal.aborted) throw err;
      if (fatal(err)) throw err;
      if (err instanceof WhipError && err.status === 409) {
        // The lesson has not started: wait as the relay asks, then try again.
        key = "class.state.waiting";
        waitS = Math.min(Math.max(err.retryAfter ?? 5, 1), 60);
      } else {
        console.warn("joining failed:", err);
        key = "class.error.other";
        message = err.message || String(err);
      }
    }
    await dropSession();
    const seconds = waitS ?? backoff.next();
    await countdown(seconds, (left) => show(key === "class.state.waiting" ? "waiting" :
      "reconnecting", key, { seconds: left, message }), signal);
  }
}

async function dropSession() {
  const old = session;
  session = null;
  quality = null;
  for (const key of Object.keys(els.quality.dataset)) delete els.quality.dataset[key];
  if (old) await old.close();
}

/** Show the stream; if the browser blocks sound without a click, play muted and offer one. */
function attach(stream) {
  if (els.player.srcObject !== stream) els.player.srcObject = stream;
  const started = els.player.play();
  started?.catch(async (err) => {
    if (err.name !== "NotAllowedError") return;
    els.player.muted = true;
    els.unmute.hidden = false;
    try {
      await els.player.play();
    } catch (again) {
      console.warn("cannot start playback even muted:", again);
    }
  });
}

function unmute() {
  els.player.muted = false;
  els.unmute.hidden = true;
  els.player.play().catch((err) => {
    console.warn("unmuting failed:", err);
    els.player.muted = true;
    els.unmute.hidden = false;
  });
}

/** Sample getStats() every second into the quality line (and its data-* attributes). */
function watchStats(pc, signal) {
  let running = true;
  let last = null;
  let stalledS = 0;
  const loop = async () => {
    while (running && !signal.aborted) {
      try {
        const sample = await sampleStats(pc);
        const dt = last ? (sample.time - last.time) / 1000 : 0;
        const frames = last ? sample.framesDecoded - last.framesDecoded : 0;
        quality = {
          fps: dt > 0 ? Math.round(frames / dt) : 0,
          kbps: dt > 0 ? Math.round(((sample.bytes - last.bytes) * 8) / dt / 1000) : 0,
          lost: sample.lost,
          framesDecoded: sample.framesDecoded,
          audioPackets: sample.audioPackets,
        };
        Object.assign(els.quality.dataset, {
          framesDecoded: sample.framesDecoded, audioPackets: sample.audioPackets,
          fps: quality.fps, kbps: quality.kbps, lost: sample.lost,
        });
        if (last) {
          stalledS = frames > 0 ? 0 : stalledS + dt;
          if (stalledS >= NO_SIGNAL_AFTER_S && status.state === "live") {
            show("nosignal", "class.state.nosignal");
          } else if (frames > 0 && status.state === "nosignal") {
            show("live", "class.state.live");
          }
        }
        last = sample;
        render();
      } catch (err) {
        if (pc.connectionState === "closed") return;
        console.warn("getStats failed:", err);
      }
      try {
        await wait(STATS_INTERVAL_MS, signal);
      } catch {
        return;
      }
    }
  };
  loop();
  return { stop: () => { running = false; } };
}

async function sampleStats(pc) {
  const report = await pc.getStats();
  const sample = { time: performance.now(), framesDecoded: 0, audioPackets: 0, bytes: 0, lost: 0 };
  report.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    sample.bytes += s.bytesReceived ?? 0;
    sample.lost += Math.max(0, s.packetsLost ?? 0);
    if (s.kind === "video") sample.framesDecoded += s.framesDecoded ?? 0;
    else if (s.kind === "audio") sample.audioPackets += s.packetsReceived ?? 0;
  });
  return sample;
}

function toggleFullscreen() {
  if (document.fullscreenElement) {
    document.exitFullscreen().catch(() => {});
  } else {
    els.theatre.requestFullscreen?.().catch((err) => console.warn("full screen refused:", err));
  }
}

function init() {
  i18n.apply();
  i18n.bindToggle(els.lang, render);
  render();
  els.fullscreen.addEventListener("click", toggleFullscreen);
  els.player.addEventListener("dblclick", toggleFullscreen);
  document.addEventListener("fullscreenchange", render);
  els.unmute.addEventListener("click", unmute);
  if (!token) {
    show("error", "token.missing");
    return;
  }
  const controller = new AbortController();
  window.addEventListener("pagehide", () => {
    controller.abort(new DOMException("the page was closed", "AbortError"));
    session?.close();
  });
  keepWatching(controller.signal).catch((err) => {
    if (isAbort(err)) return;
    if (err instanceof WhipError && (err.status === 401 || err.status === 403)) {
      show("error", "class.error.auth", { message: err.message });
    } else {
      show("error", "class.error.fatal", { message: err.message || String(err) });
    }
  });
  window.classcast = { get session() { return session; }, get quality() { return quality; } };
}

init();
