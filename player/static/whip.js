// WHIP (RFC 9725) and WHEP client: publish a MediaStream to a room, or play one.
//
// DOM-free on purpose: it uses only RTCPeerConnection, fetch and URL, so the pages (and any
// other client) share one implementation of the protocol. No UI strings live here.
//
//   const session = await publish("/whip/maths-1", token, stream, {videoCodec: "video/H264"});
//   const session = await play("/whep/maths-1", token);   // session.stream has the tracks
//   await session.close();                                // DELETEs the session resource
//
// Signalling: the offer is POSTed (application/sdp, Bearer token) once ICE gathering has
// completed (or after `gatherTimeoutMs`, or at once with `trickle: true`); any candidate that
// was not in the POSTed offer is sent afterwards with PATCH (application/trickle-ice-sdpfrag,
// RFC 8840). A 409 (WHEP: the lesson is not live yet) throws a WhipError whose `retryAfter`
// holds the server's Retry-After in seconds.

/**
 * The STUN/TURN servers the ClassCast server hands out (`GET /api/ice-servers`: coturn
 * credentials for classrooms behind strict firewalls); none if it has none or cannot be asked.
 * `publish` and `play` use them unless given `options.iceServers`.
 * @param {string} endpoint the WHIP/WHEP endpoint (its origin is asked)
 * @param {string} token bearer token
 * @returns {Promise<RTCIceServer[]>}
 */
export async function iceServersFor(endpoint, token) {
  try {
    const url = new URL("/api/ice-servers", new URL(endpoint, globalThis.location?.href));
    const response = await fetch(url, { cache: "no-store",
                                        headers: { Authorization: `Bearer ${token}` } });
    if (!response.ok) return [];
    const body = await response.json();
    return Array.isArray(body.iceServers) ? body.iceServers : [];
  } catch {
    return [];
  }
}

/** An HTTP-level failure of a WHIP/WHEP request. */
export class WhipError extends Error {
  /**
   * @param {number} status HTTP status (0: the request did not reach the server)
   * @param {string} message server's message (from its JSON error body when there is one)
   * @param {{code?: string, retryAfter?: number|null}} [extra]
   */
  constructor(status, message, { code = "", retryAfter = null } = {}) {
    super(status ? `${status}: ${message}` : message);
    this.name = "WhipError";
    this.status = status;
    this.code = code;
    /** Seconds to wait before trying again (from Retry-After), or null. */
    this.retryAfter = retryAfter;
  }
}

/** Retry-After as seconds: delta-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === "") return null;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text);
  const when = Date.parse(text);
  if (Number.isNaN(when)) return null;
  return Math.max(0, Math.ceil((when - now) / 1000));
}

/**
 * Publish `stream` over WHIP.
 * @param {string} endpoint WHIP endpoint URL (absolute or relative to the page)
 * @param {string} token bearer token
 * @param {MediaStream} stream at most one audio and one video track are sent
 * @param {{videoCodec?: string, iceServers?: RTCIceServer[], trickle?: boolean,
 *          gatherTimeoutMs?: number, screen?: MediaStreamTrack|null}} [options]
 *   videoCodec: e.g. "video/H264" or "VP8"; screen: a second video track (a shared screen),
 *   sent as the second video m-line
 */
export async function publish(endpoint, token, stream, options = {}) {
  const iceServers = options.iceServers ?? await iceServersFor(endpoint, token);
  const pc = new RTCPeerConnection({ iceServers,
                                     bundlePolicy: "max-bundle" });
  try {
    const audio = stream.getAudioTracks()[0];
    const video = stream.getVideoTracks()[0];
    if (!audio && !video) throw new TypeError("the stream has no audio or video track");
    if (audio) pc.addTransceiver(audio, { direction: "sendonly", streams: [stream] });
    if (video) {
      const transceiver = pc.addTransceiver(video, { direction: "sendonly", streams: [stream] });
      if (options.videoCodec) preferCodec(transceiver, "video", options.videoCodec);
    }
    if (options.screen) {
      const transceiver = pc.addTransceiver(options.screen, { direction: "sendonly" });
      if (options.videoCodec) preferCodec(transceiver, "video", options.videoCodec);
    }
    return await negotiate(pc, endpoint, token, options);
  } catch (err) {
    pc.close();
    throw err;
  }
}

/**
 * Play a room over WHEP. The returned session has `stream`, a MediaStream that receives the
 * room's camera and microphone as they arrive, and with `screen: true` also `screen`, a
 * MediaStream for the teacher's shared screen (the second video m-line).
 * @param {string} endpoint WHEP endpoint URL
 * @param {string} token bearer token
 * @param {{iceServers?: RTCIceServer[], trickle?: boolean, gatherTimeoutMs?: number,
 *          audio?: boolean, video?: boolean, screen?: boolean}} [options]
 */
export async function play(endpoint, token, options = {}) {
  const iceServers = options.iceServers ?? await iceServersFor(endpoint, token);
  const pc = new RTCPeerConnection({ iceServers,
                                     bundlePolicy: "max-bundle" });
  const stream = new MediaStream();
  const screen = new MediaStream();
  /** @type {RTCRtpTransceiver|null} */
  let screenTransceiver = null;
  pc.addEventListener("track", (event) => {
    const target = event.transceiver === screenTransceiver ? screen : stream;
    for (const old of target.getTracks()) {
      if (old.kind === event.track.kind && old !== event.track) target.removeTrack(old);
    }
    if (!target.getTrackById(event.track.id)) target.addTrack(event.track);
  });
  try {
    if (options.video !== false) pc.addTransceiver("video", { direction: "recvonly" });
    if (options.screen) screenTransceiver = pc.addTransceiver("video", { direction: "recvonly" });
    if (options.audio !== false) pc.addTransceiver("audio", { direction: "recvonly" });
    const session = await negotiate(pc, endpoint, token, options);
    session.stream = stream;
    session.screen = options.screen ? screen : null;
    return session;
  } catch (err) {
    pc.close();
    throw err;
  }
}

/** Put `codec` (e.g. "video/H264" or "h264") first in the transceiver's preferences. */
function preferCodec(transceiver, kind, codec) {
  const caps = globalThis.RTCRtpSender?.getCapabilities?.(kind);
  if (!caps || typeof transceiver.setCodecPreferences !== "function") return;
  const wanted = (codec.includes("/") ? codec : `${kind}/${codec}`).toLowerCase();
  const chosen = caps.codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (!chosen.length) throw new TypeError(`this browser cannot send ${codec}`);
  const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== wanted);
  transceiver.setCodecPreferences([...chosen, ...rest]);
}

async function negotiate(pc, endpoint, token, options) {
  const gatherTimeoutMs = options.trickle ? 0 : (options.gatherTimeoutMs ?? 2000);
  const trickle = new Trickler(pc, token);
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc, gatherTimeoutMs);
  let offer = pc.localDescription.sdp;
  if (pc.iceGatheringState === "complete") offer = withEndOfCandidates(offer);
  trickle.sentInOffer(offer);

  const response = await request(endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
    body: offer,
  });
  if (response.status !== 201) throw await errorOf(response);
  const header = response.headers.get("Location");
  if (!header) throw new WhipError(response.status, "the server sent no Location header");
  // fetch follows a 307 to the worker that owns the room; resolve against the final URL.
  const location = new URL(header, response.url || endpoint).href;
  const answer = await response.text();
  const session = new Session(pc, location, token, trickle);
  try {
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
  } catch (err) {
    await session.close();
    throw err;
  }
  trickle.start(location);
  return session;
}

/** The SDP with a=end-of-candidates in every m-section that lacks it (RFC 8840). */
function withEndOfCandidates(sdp) {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  const [session, ...media] = sdp.split(`${eol}m=`);
  const sections = media.map((section) => {
    if (/^a=end-of-candidates/m.test(section)) return section;
    const body = section.endsWith(eol) ? section.slice(0, -eol.length) : section;
    return `${body}${eol}a=end-of-candidates${section.endsWith(eol) ? eol : ""}`;
  });
  return [session, ...sections].join(`${eol}m=`);
}

/** Resolves when ICE gathering is complete, or after `timeoutMs`. */
function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete" || timeoutMs <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    }, timeoutMs);
    pc.addEventListener("icegatheringstatechange", done);
  });
}

async function request(url, init) {
  try {
    return await fetch(url, { cache: "no-store", ...init });
  } catch (err) {
    throw new WhipError(0, `the server could not be reached (${err.message})`, {
      code: "network",
    });
  }
}

async function errorOf(response) {
  let message = response.statusText || "request failed";
  let code = "";
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      message = body.message || message;
      code = body.error || "";
    } catch {
      if (text) message = text.slice(0, 300);
    }
  } catch {
    // no body
  }
  return new WhipError(response.status, message, {
    code, retryAfter: parseRetryAfter(response.headers.get("Retry-After")),
  });
}

/**
 * A candidate's identity: foundation, component, transport, priority, address, port, type.
 * (Chromium's icecandidate strings carry "ufrag …", its SDP lines do not.)
 */
function candidateKey(text) {
  return text.trim().replace(/^candidate:/, "").split(/\s+/).slice(0, 8).join(" ");
}

/**
 * Sends candidates that were not in the POSTed offer to the session with PATCH
 * (application/trickle-ice-sdpfrag), batched, with a=end-of-candidates at the end.
 */
class Trickler {
  constructor(pc, token) {
    this.pc = pc;
    this.token = token;
    this.location = null;
    this.sent = new Set();
    this.pending = [];
    this.ended = false;
    this.endSent = false;
    this.disabled = false;
    this.flushing = null;
    this.onCandidate = (event) => {
      if (event.candidate && event.candidate.candidate) {
        this.pending.push(event.candidate);
      } else if (!event.candidate) {
        this.ended = true;
      }
      this.flush();
    };
    pc.addEventListener("icecandidate", this.onCandidate);
  }

  /** Remember which candidates the POSTed offer already carried. */
  sentInOffer(sdp) {
    for (const line of sdp.split(/\r?\n/)) {
      if (line.startsWith("a=candidate:")) this.sent.add(candidateKey(line.slice(2)));
    }
    if (/^a=end-of-candidates/m.test(sdp)) this.endSent = true;
  }

  start(location) {
    this.location = location;
    this.flush();
  }

  stop() {
    this.disabled = true;
    this.pc.removeEventListener("icecandidate", this.onCandidate);
  }

  flush() {
    if (!this.location || this.disabled || this.flushing) return;
    this.flushing = Promise.resolve().then(() => this.send()).finally(() => {
      this.flushing = null;
      if (this.pending.length || (this.ended && !this.endSent)) this.flush();
    });
  }

  async send() {
    const fresh = this.pending.splice(0).filter((c) => !this.sent.has(candidateKey(c.candidate)));
    const end = this.ended && !this.endSent;
    if (!fresh.length && !end) return;
    const fragment = this.fragment(fresh, end);
    if (!fragment) return;
    let response;
    try {
      response = await fetch(this.location, {
        method: "PATCH",
        headers: { "Content-Type": "application/trickle-ice-sdpfrag",
                   Authorization: `Bearer ${this.token}` },
        body: fragment,
      });
    } catch {
      return; // the connection will fail or succeed on what the server already has
    }
    for (const c of fresh) this.sent.add(candidateKey(c.candidate));
    if (end) this.endSent = true;
    if ([405, 422, 501].includes(response.status)) this.stop(); // no trickle support
  }

  fragment(candidates, end) {
    const local = this.pc.localDescription?.sdp ?? "";
    const ufrag = /^a=ice-ufrag:(.*)$/m.exec(local)?.[1]?.trim();
    const pwd = /^a=ice-pwd:(.*)$/m.exec(local)?.[1]?.trim();
    const mline = /^m=(\w+) /m.exec(local)?.[1] ?? "audio";
    const firstMid = /^a=mid:(.*)$/m.exec(local)?.[1]?.trim() ?? "0";
    if (!ufrag || !pwd) return "";
    // With max-bundle every candidate belongs to the first m-section.
    const lines = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, `m=${mline} 9 RTP/AVP 0`,
                   `a=mid:${firstMid}`];
    for (const c of candidates) lines.push(`a=${c.candidate.trim()}`);
    if (end) lines.push("a=end-of-candidates");
    return lines.join("\r\n") + "\r\n";
  }
}

/** One WHIP/WHEP session: its peer connection and resource URL. */
class Session {
  constructor(pc, location, token, trickler) {
    this.pc = pc;
    this.location = location;
    this.token = token;
    /** @type {MediaStream|null} the room's camera and microphone (play) */
    this.stream = null;
    /** @type {MediaStream|null} the teacher's shared screen (play with `screen: true`) */
    this.screen = null;
    this.trickler = trickler;
    this.closing = null;
  }

  /**
   * A classroom session's level (WHEP only): what the relay sends it now, and why.
   * @param {AbortSignal} [signal] e.g. AbortSignal.timeout(…): a weak link can stall a request
   * @returns {Promise<{level: "full"|"low"|"audio", reason: string, pinned: string|null,
   *                    changes: number}>}
   */
  async level(signal = undefined) {
    const response = await request(`${this.location}/level`, {
      headers: { Authorization: `Bearer ${this.token}` }, signal,
    });
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  /**
   * Keep this classroom at `pin` or below ("low": the low rendition, "audio": sound only;
   * null: let its link decide). The relay still moves it lower if the link says so.
   * @param {"full"|"low"|"audio"|null} pin
   */
  async pinLevel(pin) {
    const response = await request(`${this.location}/level`, {
      method: "PUT",
      headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ pin }),
    });
    if (!response.ok) throw await errorOf(response);
    return response.json();
  }

  /** End the session: DELETE its resource (best effort) and close the peer connection. */
  close() {
    if (!this.closing) {
      this.trickler.stop();
      // DELETE before closing the peer connection, so the server ends the session because
      // we asked (not because it saw the DTLS close first); resolves with the status.
      this.closing = fetch(this.location, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${this.token}` },
        keepalive: true, // still sent when the page is being unloaded
      }).then((r) => r.status, () => 0).finally(() => this.pc.close());
    }
    return this.closing;
  }
}
