// Stand-ins for the browser APIs the DOM-free modules use (RTCPeerConnection, MediaStream,
// fetch, WebSocket), recording what the modules do with them. Test helpers only.

export const OFFER = [
  "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
  "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:0", "a=ice-ufrag:abcd", "a=ice-pwd:secretsecret",
  "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:1", "",
].join("\r\n");

export class FakeTrack {
  constructor(kind, id = `${kind}-1`) {
    this.kind = kind;
    this.id = id;
  }
}

export class FakeMediaStream {
  constructor(tracks = []) {
    this.tracks = [...tracks];
  }

  getTracks() { return [...this.tracks]; }

  getAudioTracks() { return this.tracks.filter((t) => t.kind === "audio"); }

  getVideoTracks() { return this.tracks.filter((t) => t.kind === "video"); }

  getTrackById(id) { return this.tracks.find((t) => t.id === id) ?? null; }

  addTrack(track) { this.tracks.push(track); }

  removeTrack(track) { this.tracks = this.tracks.filter((t) => t !== track); }
}

export class FakePeerConnection extends EventTarget {
  static last = null;

  constructor(config) {
    super();
    this.config = config;
    this.transceivers = [];
    this.iceGatheringState = "complete";
    this.connectionState = "new";
    this.localDescription = null;
    this.remoteDescription = null;
    this.closed = false;
    FakePeerConnection.last = this;
  }

  addTransceiver(trackOrKind, init) {
    const kind = typeof trackOrKind === "string" ? trackOrKind : trackOrKind.kind;
    const transceiver = { kind, init, track: typeof trackOrKind === "string" ? null : trackOrKind,
                          mid: String(this.transceivers.length) };
    this.transceivers.push(transceiver);
    return transceiver;
  }

  getTransceivers() { return [...this.transceivers]; }

  async createOffer() { return { type: "offer", sdp: OFFER }; }

  async setLocalDescription(description) { this.localDescription = description; }

  async setRemoteDescription(description) {
    if (!description.sdp.startsWith("v=0")) throw new Error("not SDP");
    this.remoteDescription = description;
  }

  getSenders() { return []; }

  getReceivers() { return []; }

  close() { this.closed = true; }

  /** What the browser does when media arrives on a transceiver. */
  deliver(index, track) {
    const event = new Event("track");
    Object.assign(event, { track, transceiver: this.transceivers[index] });
    this.dispatchEvent(event);
  }
}

/** A fetch that answers from `routes` ("METHOD path" → Response maker) and records calls. */
export function fakeFetch(routes) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    const path = new URL(String(url), "http://server.test").pathname;
    const method = init.method ?? "GET";
    calls.push({ method, path, init });
    const route = routes[`${method} ${path}`];
    if (!route) return new Response("", { status: 404 });
    return route(init);
  };
  return { fetch, calls };
}

/** Install the fakes on globalThis for one test; returns a function that removes them. */
export function installBrowser(fetch) {
  const saved = { RTCPeerConnection: globalThis.RTCPeerConnection,
                  MediaStream: globalThis.MediaStream, fetch: globalThis.fetch };
  globalThis.RTCPeerConnection = FakePeerConnection;
  globalThis.MediaStream = FakeMediaStream;
  globalThis.fetch = fetch;
  return () => Object.assign(globalThis, saved);
}

/** A WebSocket stand-in: tests open, message and close it by hand. */
export class FakeWebSocket extends EventTarget {
  static made = [];

  constructor(url) {
    super();
    this.url = url;
    this.sent = [];
    this.closed = false;
    FakeWebSocket.made.push(this);
  }

  send(data) { this.sent.push(JSON.parse(data)); }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.dispatchEvent(new Event("close"));
  }

  open() { this.dispatchEvent(new Event("open")); }

  receive(message) {
    const event = new Event("message");
    Object.assign(event, { data: typeof message === "string" ? message : JSON.stringify(message) });
    this.dispatchEvent(event);
  }
}
