// Teacher console (/teach/{room}): camera + microphone preview, go live over WHIP, share a
// screen as a second video track, end the lesson, re-publish by itself when the connection is
// lost; recording on/off; the classrooms watching with their link quality and their raised
// hands and questions (over the room channel), which the teacher marks answered.

import { channelUrl, RoomChannel } from "./channel.js";
import * as i18n from "./i18n.js";
import { pageLink, roomFromPath, tokenFromUrl } from "./params.js";
import { grade, linkFigures } from "./quality.js";
import { Backoff, connected, connectionLost, countdown, isAbort } from "./retry.js";
import { publish, WhipError } from "./whip.js";

const RECORDING_POLL_MS = 5000;

const room = roomFromPath();
const token = tokenFromUrl();
/** The page's elements by id (typed loosely: each page knows what its ids are). */
/** @type {(id: string) => any} */
const $ = (id) => document.getElementById(id);
const els = {
  title: $("title"), preview: $("preview"), state: $("state"), golive: $("golive"),
  end: $("end"), codec: $("codec"), lang: $("lang"), home: $("home-link"),
  share: $("share"), screenPreview: $("screen-preview"), record: $("record"),
  recordState: $("record-state"), channel: $("channel"), questions: $("questions"),
  questionsTitle: $("questions-title"), questionsEmpty: $("questions-empty"),
  classrooms: $("classrooms"), classroomsTitle: $("classrooms-title"),
  classroomsEmpty: $("classrooms-empty"), cameraDevice: $("camera-device"),
  micDevice: $("mic-device"),
};

// What the state line shows: a key plus its placeholder values, re-rendered on language change.
let status = { state: "idle", key: "teach.state.idle", vars: {} };
let stream = null;
let session = null;
let lesson = null; // AbortController of the running lesson (Go live → End lesson)
let screen = null; // the shared screen's video track, or null
let republish = null; // resolves the wait of keepPublishing to publish again at once
/** @type {Map<number, any>} */
const questions = new Map();
let classrooms = [];
let recording = { on: false, error: null, known: false };
let channel = null;

function render() {
  document.title = `${t("teach.title", { room })} · ClassCast`;
  els.title.textContent = t("teach.title", { room });
  els.home.href = pageLink("/", { token, lang: i18n.getLang() });
  els.state.textContent = t(status.key, status.vars);
  els.state.dataset.state = status.state;
  els.share.textContent = t(screen ? "teach.share.stop" : "teach.share");
  els.share.setAttribute("aria-pressed", String(Boolean(screen)));
  els.record.textContent = t(recording.on ? "teach.record.stop" : "teach.record");
  els.record.setAttribute("aria-pressed", String(recording.on));
  els.recordState.textContent = recording.error
    ? t("teach.record.error", { message: recording.error })
    : recording.known ? t(recording.on ? "teach.record.on" : "teach.record.off") : "";
  els.recordState.dataset.recording = String(recording.on);
  els.channel.textContent = t("teach.channel.down");
  renderQuestions();
  renderClassrooms();
}

function renderQuestions() {
  const all = [...questions.values()].sort((a, b) => a.id - b.id);
  const open = all.filter((q) => !q.answered);
  els.questionsTitle.textContent = t("teach.questions", { count: open.length });
  els.questionsEmpty.hidden = all.length > 0;
  // Open questions first (oldest first), then the answered ones.
  const ordered = [...open, ...all.filter((q) => q.answered)];
  // Re-rendering replaces the buttons: keep keyboard focus on the same question.
  const focused = els.questions.contains(document.activeElement)
    ? document.activeElement.closest("li")?.dataset.id : null;
  els.questions.replaceChildren(...ordered.map((q) => {
    const li = document.createElement("li");
    li.dataset.id = String(q.id);
    li.dataset.answered = String(q.answered);
    const who = document.createElement("p");
    who.className = "who";
    const time = new Date(q.asked_at * 1000).toLocaleTimeString(i18n.getLang() === "zh" ? "zh-CN" : "en");
    who.textContent = `${t(q.text ? "teach.question.asked" : "teach.question.hand",
                           { classroom: q.classroom })} · ${time}`;
    li.append(who);
    if (q.text) {
      const text = document.createElement("p");
      text.className = "text";
      text.textContent = q.text;
      li.append(text);
    }
    if (q.answered) {
      const done = document.createElement("p");
      done.className = "done";
      done.textContent = t("teach.question.answered");
      li.append(done);
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = t("teach.question.answer");
      button.addEventListener("click", () => {
        if (channel?.send({ type: "answer", id: q.id })) button.disabled = true;
      });
      li.append(button);
    }
    return li;
  }));
  if (focused) {
    const again = els.questions.querySelector(`li[data-id="${focused}"] button`)
      ?? els.questions.querySelector("li button");
    again?.focus();
  }
}

function renderClassrooms() {
  els.classroomsTitle.textContent = t("teach.classrooms", { count: classrooms.length });
  els.classroomsEmpty.hidden = classrooms.length > 0;
  els.classrooms.replaceChildren(...classrooms.map((c) => {
    const li = document.createElement("li");
    const level = grade(c.link, c.page);
    li.dataset.session = c.session;
    li.dataset.grade = level ?? "unknown";
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = c.subject;
    if (level) {
      const badge = document.createElement("span");
      badge.className = `grade grade-${level}`;
      badge.textContent = t(`teach.grade.${level}`);
      who.append(" ", badge);
    }
    const line = document.createElement("p");
    line.className = "quality";
    const parts = [];
    if (c.link && (c.link.rtt_ms !== null || c.link.kbps !== null)) {
      parts.push(t("teach.classroom.link", linkFigures(c.link)));
    }
    if (c.page) parts.push(t("teach.classroom.page", { fps: Math.round(c.page.fps),
                                                        freezes: c.page.freezes }));
    line.textContent = parts.length ? parts.join(" · ") : t("teach.classroom.measuring");
    li.append(who, line);
    return li;
  }));
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
      listDevices();
      return media;
    }, (err) => {
      camera = null; // let the next Go live ask again
      throw Object.assign(new Error(err.message || err.name), { camera: true, cause: err });
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
      show("error", cameraKey(err), { message: err.message });
    } else if (err instanceof WhipError && (err.status === 401 || err.status === 403)) {
      channel?.close(); // the same token would be refused there too
      show("error", "teach.error.auth", { message: err.message });
    } else {
      show("error", "teach.error.other", { message: err.message || String(err) });
    }
    await dropSession();
    stopLesson();
  }
}

/** The message for a camera that failed: none there or not allowed, or anything else. */
function cameraKey(err) {
  const name = err.cause?.name ?? "";
  return ["NotFoundError", "NotAllowedError", "OverconstrainedError", "NotReadableError"]
    .includes(name) ? "teach.error.nocamera" : "teach.error.camera";
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
    let network = false;
    const again = new Promise((resolve) => { republish = resolve; });
    try {
      session = await publish(`/whip/${encodeURIComponent(room)}`, token, stream,
                              { videoCodec: els.codec.value || undefined, screen });
      if (signal.aborted) throw signal.reason;
      await connected(session.pc, signal);
      show("live", "teach.state.live");
      backoff.reset();
      refreshRecording();
      const why = await Promise.race([connectionLost(session.pc, { signal }), again]);
      console.info("publishing connection ended:", why);
    } catch (err) {
      if (isAbort(err) || signal.aborted) throw signal.reason ?? err;
      if (fatal(err)) throw err;
      console.warn("publishing failed:", err);
      // 409: the room has a teacher, usually our own previous session not yet timed out.
      if (err instanceof WhipError && err.status === 409) busy = err.retryAfter ?? backoff.next();
      network = err instanceof WhipError && err.status === 0;
    }
    await dropSession();
    if (await Promise.race([again, Promise.resolve(false)])) continue; // screen on/off: at once
    if (busy !== null) {
      await countdown(busy, (left) => show("busy", "teach.state.busy", { seconds: left }),
                      signal);
    } else {
      await countdown(backoff.next(),
                      (left) => show("reconnecting", network ? "teach.error.network"
                        : "teach.state.reconnecting", { seconds: left }),
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

/** Share a screen (a second video track), or stop sharing; a live lesson publishes again. */
async function toggleShare() {
  if (screen) {
    stopShare();
    return;
  }
  let media;
  try {
    media = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: { ideal: 15 } },
                                                           audio: false });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "AbortError") return; // cancelled
    show("error", "teach.share.error", { message: err.message || err.name });
    return;
  }
  screen = media.getVideoTracks()[0];
  screen.contentHint = "detail"; // slides: keep text sharp rather than the frame rate
  screen.addEventListener("ended", stopShare); // the browser's own "stop sharing" bar
  els.screenPreview.srcObject = media;
  els.screenPreview.hidden = false;
  render();
  republish?.("screen-on");
}

function stopShare() {
  if (!screen) return;
  screen.stop();
  screen = null;
  els.screenPreview.srcObject = null;
  els.screenPreview.hidden = true;
  render();
  republish?.("screen-off");
}

// --- camera and microphone choice ---------------------------------------------------------

const DEVICE_KINDS = { video: { select: "cameraDevice", device: "videoinput", label: "camera" },
                       audio: { select: "micDevice", device: "audioinput", label: "mic" } };

/** Fill the camera and microphone lists (labels are known once access was granted). */
async function listDevices() {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch (err) {
    console.warn("cannot list the devices:", err);
  }
  for (const [kind, how] of Object.entries(DEVICE_KINDS)) {
    const select = els[how.select];
    const current = stream?.getTracks().find((tr) => tr.kind === kind)?.getSettings().deviceId;
    const found = devices.filter((d) => d.kind === how.device);
    select.replaceChildren(...found.map((d, i) => {
      const option = document.createElement("option");
      option.value = d.deviceId;
      option.textContent = d.label || t(`teach.device.${how.label}`, { n: i + 1 });
      option.selected = d.deviceId === current;
      return option;
    }));
    select.disabled = found.length < 2;
  }
}

/** Use another camera or microphone; a live lesson keeps going (the sender's track is
 * replaced, no new session). */
async function switchDevice(kind) {
  const deviceId = els[DEVICE_KINDS[kind].select].value;
  const old = stream?.getTracks().find((tr) => tr.kind === kind);
  if (!stream || !deviceId || old?.getSettings().deviceId === deviceId) return;
  try {
    const media = await navigator.mediaDevices.getUserMedia(
      kind === "video" ? { video: { deviceId: { exact: deviceId } } }
        : { audio: { deviceId: { exact: deviceId }, echoCancellation: true } });
    const fresh = media.getTracks()[0];
    const sender = session?.pc.getSenders().find((s) => s.track && s.track === old);
    if (sender) await sender.replaceTrack(fresh);
    if (old) {
      stream.removeTrack(old);
      old.stop();
    }
    stream.addTrack(fresh);
  } catch (err) {
    show("error", "teach.device.error", { message: err.message || err.name });
  }
}

// --- recording ---------------------------------------------------------------------------

async function recordingRequest(init) {
  const response = await fetch(`/api/rooms/${encodeURIComponent(room)}/recording`, {
    cache: "no-store", ...init,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

async function refreshRecording() {
  try {
    const body = await recordingRequest({ method: "GET" });
    recording = { on: Boolean(body.recording), error: body.error ?? null, known: true };
  } catch (err) {
    console.warn("recording status unknown:", err);
    recording = { ...recording, known: false };
  }
  els.record.disabled = status.state !== "live" && !recording.on;
  render();
}

async function toggleRecording() {
  els.record.disabled = true;
  try {
    const body = await recordingRequest({
      method: "POST", body: JSON.stringify({ action: recording.on ? "stop" : "start" }),
    });
    recording = { on: Boolean(body.recording), error: body.error ?? null, known: true };
  } catch (err) {
    recording = { ...recording, error: err.message || String(err) };
  }
  els.record.disabled = false;
  render();
}

// --- the room channel --------------------------------------------------------------------

function onChannelMessage(message) {
  if (message.type === "hello") {
    questions.clear();
    for (const q of message.questions ?? []) questions.set(q.id, q);
    classrooms = message.classrooms ?? [];
  } else if (message.type === "asked" || message.type === "answered") {
    questions.set(message.question.id, message.question);
  } else if (message.type === "classrooms") {
    classrooms = message.classrooms;
    renderClassrooms(); // every 2 s: only the list that changed
    return;
  } else if (message.type === "error") {
    console.warn("the server refused a message:", message.message);
  }
  render();
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
  els.share.addEventListener("click", toggleShare);
  els.cameraDevice.addEventListener("change", () => switchDevice("video"));
  els.micDevice.addEventListener("change", () => switchDevice("audio"));
  els.record.addEventListener("click", toggleRecording);
  if (!navigator.mediaDevices?.getDisplayMedia) els.share.disabled = true;
  channel = new RoomChannel(channelUrl(location.href, room, token), {
    onMessage: onChannelMessage,
    onState: (state) => { els.channel.hidden = state !== "connecting"; },
  });
  channel.start();
  refreshRecording();
  setInterval(() => { if (lesson) refreshRecording(); }, RECORDING_POLL_MS);
  // Leaving the page ends the session at once instead of after the relay's ICE timeout.
  window.addEventListener("pagehide", () => session?.close());
  navigator.mediaDevices?.addEventListener?.("devicechange", () => { if (stream) listDevices(); });
  openCamera().then(() => {
    if (!lesson) show("idle", "teach.state.idle");
  }, (err) => {
    if (!lesson) show("error", cameraKey(err), { message: err.message });
  });
  window.classcast = {
    get session() { return session; }, get stream() { return stream; },
    get screen() { return screen; }, get classrooms() { return classrooms; },
    get questions() { return [...questions.values()]; }, get recording() { return recording; },
    get channel() { return channel; },
  };
}

init();
