// Classroom screen (/class/{room}): one big player that joins the lesson over WHEP by itself,
// waits while the lesson has not started (409 + Retry-After), reconnects when the connection
// is lost, and shows a small quality line from getStats(). When the teacher shares a screen it
// fills the player and the camera moves to a corner. Over the room channel the classroom
// raises its hand or asks a question, sees when the teacher has answered, and reports what its
// player measures so the teacher console can show it.

import { channelUrl, RoomChannel } from "./channel.js";
import * as i18n from "./i18n.js";
import { pageLink, roomFromPath, tokenFromUrl } from "./params.js";
import { Backoff, connected, connectionLost, countdown, isAbort, wait } from "./retry.js";
import { play, WhipError } from "./whip.js";

const STATS_INTERVAL_MS = 1000;
const NO_SIGNAL_AFTER_S = 5; // no new frame this long while connected → "no picture"
const SCREEN_GONE_AFTER_S = 3; // the shared screen is hidden after this long without a frame
const LEVEL_EVERY = 2; // ask the relay for this classroom's level every this many samples
// On a weak link a deeper jitter buffer rides out loss and retransmissions (measured: 30 fps
// held on 300 kbit/s, 5 % loss, 80 ms with 400 ms; 0 fps without the low rendition at all).
const WEAK_LINK_JITTER_MS = 400;
const LOW_DATA_KEY = "classcast.lowData";
const WEAK_LINK_GRACE_MS = 10_000;
const LEVEL_TIMEOUT_MS = 4000;

const room = roomFromPath();
const token = tokenFromUrl();
/** The page's elements by id (typed loosely: each page knows what its ids are). */
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);
const els = {
  title: $("title"), theatre: $("theatre"), player: $("player"), unmute: $("unmute"),
  state: $("state"), notice: $("notice"), quality: $("quality"), fullscreen: $("fullscreen"), lang: $("lang"),
  home: $("home-link"), screen: $("screen"), hand: $("hand"), ask: $("ask"),
  question: $("question"), send: $("send"), askState: $("ask-state"), mine: $("my-questions"),
  level: $("level"), lowData: $("lowdata"),
};

let status = { state: "connecting", key: "class.state.connecting", vars: {} };
let quality = null; // the last sample: {fps, kbps, lost, framesDecoded, audioPackets}
let session = null;
let channel = null;
let channelOpen = false;
let liveWake = null; // AbortController of the wait before the next join, while there is one
let askError = "";
/** @type {{level: string, reason: string, pinned: string|null}|null} what the relay sends */
let level = null;
let lowData = readLowData();
/** @type {Map<number, any>} the hands and questions this page sent */
const mine = new Map();

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
  const levelKey = level?.level === "low" ? (level.pinned ? "class.level.low.pinned"
    : "class.level.low") : level?.level === "audio" ? "class.level.audio" : "";
  els.level.hidden = !levelKey;
  els.level.textContent = levelKey ? t(levelKey) : "";
  els.level.title = level?.reason ?? "";
  els.level.dataset.level = level?.level ?? "";
  els.lowData.textContent = t(lowData ? "class.lowdata.on" : "class.lowdata");
  els.lowData.title = t("class.lowdata.help");
  els.lowData.setAttribute("aria-pressed", String(lowData));
  renderQuestions();
}

function readLowData() {
  try {
    return localStorage.getItem(LOW_DATA_KEY) === "1";
  } catch {
    return false;
  }
}

/** 低流量模式: keep this classroom at the low rendition (remembered on this screen). */
async function toggleLowData() {
  lowData = !lowData;
  try {
    localStorage.setItem(LOW_DATA_KEY, lowData ? "1" : "0");
  } catch {
    // private mode: remembered for this page only
  }
  render();
  const current = session;
  if (!current) return; // applied when the next session starts
  try {
    level = await current.pinLevel(lowData ? "low" : null);
    tuneJitter(current);
  } catch (err) {
    console.warn("the low data mode could not be set:", err);
  }
  render();
}

/** A deeper jitter buffer while the link is weak (or the classroom says it is). */
function tuneJitter(current) {
  const weak = lowData || (level != null && level.level !== "full");
  for (const receiver of current.pc.getReceivers()) {
    /** @type {any} */ (receiver).jitterBufferTarget = weak ? WEAK_LINK_JITTER_MS : null;
  }
}

function renderQuestions() {
  const handUp = [...mine.values()].some((q) => !q.text && !q.answered);
  els.hand.textContent = t(handUp ? "class.hand.sent" : "class.hand");
  els.hand.setAttribute("aria-pressed", String(handUp));
  for (const el of [els.hand, els.send, els.question]) el.disabled = !channelOpen;
  els.askState.textContent = !channelOpen ? t("class.channel.down")
    : askError ? t("class.ask.error", { message: askError }) : "";
  const list = [...mine.values()].sort((a, b) => b.id - a.id);
  els.mine.replaceChildren(...list.map((q) => {
    const li = document.createElement("li");
    li.dataset.id = String(q.id);
    li.dataset.answered = String(q.answered);
    const text = document.createElement("p");
    text.className = "text";
    text.textContent = q.text || t("class.question.hand");
    const state = document.createElement("p");
    state.className = q.answered ? "done" : "who";
    state.textContent = t(q.answered ? "class.question.answered" : "class.question.waiting");
    li.append(text, state);
    return li;
  }));
}

function onChannelMessage(message) {
  if (message.type === "live") {
    liveWake?.abort(new DOMException("the lesson started", "AbortError"));
    return;
  }
  if (message.type === "asked" || message.type === "answered") {
    mine.set(message.question.id, message.question);
    askError = "";
  } else if (message.type === "error") {
    askError = message.message;
  }
  render();
}

function raiseHand() {
  askError = "";
  if (!channel?.send({ type: "hand" })) askError = t("class.channel.down");
  render();
}

function ask(event) {
  event.preventDefault();
  const text = els.question.value.trim();
  if (!text) {
    els.question.focus();
    return;
  }
  askError = "";
  if (channel?.send({ type: "ask", text })) {
    els.question.value = "";
  } else {
    askError = t("class.channel.down");
  }
  render();
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
      session = await play(`/whep/${encodeURIComponent(room)}`, token, { screen: true });
      attach(session.stream);
      els.screen.srcObject = session.screen;
      await connected(session.pc, signal);
      if (lowData) {
        level = await session.pinLevel("low").catch((err) => {
          console.warn("the low data mode could not be set:", err);
          return null;
        });
      }
      tuneJitter(session);
      show("live", "class.state.live");
      backoff.reset();
      const stats = watchStats(session, signal);
      // a weak link's congestion can stop ICE consent for seconds: only give up on a session
      // the relay still serves after WEAK_LINK_GRACE_MS of "disconnected"
      const why = await connectionLost(session.pc, { signal, graceMs: WEAK_LINK_GRACE_MS });
      stats.stop();
      console.info("classroom connection lost:", why);
    } catch (err) {
      if (isAbort(err) || signal.aborted) throw err;
      if (fatal(err)) throw err;
      if (err instanceof WhipError && err.status === 409) {
        // The lesson has not started: wait as the relay asks, then try again.
        key = "class.state.waiting";
        waitS = Math.min(Math.max(err.retryAfter ?? 5, 1), 60);
      } else if (err instanceof WhipError && err.status === 0) {
        console.warn("the server cannot be reached:", err.message);
        key = "class.error.network";
      } else {
        console.warn("joining failed:", err);
        key = "class.error.other";
        message = err.message || String(err);
      }
    }
    await dropSession();
    const seconds = waitS ?? backoff.next();
    // The room channel says {"type": "live"} when the lesson starts: stop waiting then.
    const wake = new AbortController();
    liveWake = wake;
    try {
      await countdown(seconds, (left) => show(key === "class.state.waiting" ? "waiting" :
        "reconnecting", key, { seconds: left, message }), AbortSignal.any([signal, wake.signal]));
    } catch (err) {
      if (signal.aborted || !wake.signal.aborted) throw err;
    } finally {
      liveWake = null;
    }
  }
}

async function dropSession() {
  const old = session;
  session = null;
  quality = null;
  level = null;
  for (const key of Object.keys(els.quality.dataset)) delete els.quality.dataset[key];
  showScreen(false);
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

/** The shared screen fills the player and the camera moves to a corner, or back. */
function showScreen(on) {
  els.screen.hidden = !on;
  els.theatre.classList.toggle("has-screen", on);
  if (on && els.screen.paused) els.screen.play().catch(() => {});
}

/**
 * Sample getStats() every second into the quality line (and its data-* attributes), show the
 * shared screen while it has pictures, and report the numbers to the teacher console.
 */
function watchStats(current, signal) {
  const pc = current.pc;
  const sessionId = new URL(current.location).pathname.split("/").pop();
  let running = true;
  let last = null;
  let stalledS = 0;
  let screenStalledS = 0;
  let samples = 0;
  /** @type {Promise<void>|null} a level request in flight */
  let levelAsked = null;
  const loop = async () => {
    while (running && !signal.aborted) {
      try {
        const sample = await sampleStats(current);
        const dt = last ? (sample.time - last.time) / 1000 : 0;
        const frames = last ? sample.framesDecoded - last.framesDecoded : 0;
        const screenFrames = last ? sample.screenFrames - last.screenFrames : 0;
        quality = {
          fps: dt > 0 ? Math.round(frames / dt) : 0,
          kbps: dt > 0 ? Math.round(((sample.bytes - last.bytes) * 8) / dt / 1000) : 0,
          lost: sample.lost,
          freezes: sample.freezes,
          framesDecoded: sample.framesDecoded,
          audioPackets: sample.audioPackets,
        };
        Object.assign(els.quality.dataset, {
          framesDecoded: sample.framesDecoded, audioPackets: sample.audioPackets,
          fps: quality.fps, kbps: quality.kbps, lost: sample.lost,
          screenFrames: sample.screenFrames, freezes: sample.freezes,
        });
        if (last) {
          screenStalledS = screenFrames > 0 ? 0 : screenStalledS + dt;
          showScreen(screenFrames > 0 || (!els.screen.hidden &&
                                          screenStalledS < SCREEN_GONE_AFTER_S));
          channel?.send({ type: "stats", session: sessionId, fps: quality.fps,
                          kbps: quality.kbps, lost: sample.lost, freezes: sample.freezes });
          stalledS = frames > 0 ? 0 : stalledS + dt;
          if (stalledS >= NO_SIGNAL_AFTER_S && status.state === "live") {
            show("nosignal", "class.state.nosignal");
          } else if (frames > 0 && status.state === "nosignal") {
            show("live", "class.state.live");
          }
        }
        last = sample;
        if (++samples % LEVEL_EVERY === 0 && !levelAsked) {
          // Not awaited: on a congested link the request can stall for seconds, and the
          // quality line must go on meanwhile; a stalled one is given up for a fresh one.
          levelAsked = current.level(AbortSignal.timeout(LEVEL_TIMEOUT_MS)).then((info) => {
            level = info;
            tuneJitter(current);
            render();
          }, () => {
            // the session is ending, has no camera video, or the request stalled: ask again
          }).finally(() => { levelAsked = null; });
        }
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

/** Counters of a session: camera frames, shared-screen frames, audio packets, bytes, loss. */
async function sampleStats(current) {
  const report = await current.pc.getStats();
  const screenTrack = current.screen?.getVideoTracks()[0]?.id;
  const sample = { time: performance.now(), framesDecoded: 0, screenFrames: 0, audioPackets: 0,
                   bytes: 0, lost: 0, freezes: 0 };
  report.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    sample.bytes += s.bytesReceived ?? 0;
    sample.lost += Math.max(0, s.packetsLost ?? 0);
    if (s.kind === "video" && screenTrack && s.trackIdentifier === screenTrack) {
      sample.screenFrames += s.framesDecoded ?? 0;
    } else if (s.kind === "video") {
      sample.framesDecoded += s.framesDecoded ?? 0;
      sample.freezes += s.freezeCount ?? 0;
    } else if (s.kind === "audio") {
      sample.audioPackets += s.packetsReceived ?? 0;
    }
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
  els.hand.addEventListener("click", raiseHand);
  els.lowData.addEventListener("click", toggleLowData);
  els.ask.addEventListener("submit", ask);
  if (!token) {
    show("error", "token.missing");
    return;
  }
  channel = new RoomChannel(channelUrl(location.href, room, token), {
    onMessage: onChannelMessage,
    onState: (state) => {
      channelOpen = state === "open";
      render();
    },
  });
  channel.start();
  const controller = new AbortController();
  window.addEventListener("pagehide", () => {
    controller.abort(new DOMException("the page was closed", "AbortError"));
    session?.close();
  });
  keepWatching(controller.signal).catch((err) => {
    if (isAbort(err)) return;
    if (err instanceof WhipError && (err.status === 401 || err.status === 403)) {
      channel?.close(); // the same token would be refused there too
      show("error", "class.error.auth", { message: err.message });
    } else {
      show("error", "class.error.fatal", { message: err.message || String(err) });
    }
  });
  window.classcast = { get session() { return session; }, get quality() { return quality; },
                       get questions() { return [...mine.values()]; },
                       get level() { return level; },
                       get channel() { return channel; } };
}

init();
