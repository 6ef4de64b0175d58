// The room channel: one WebSocket per page (`/ws/{room}?token=…`) that carries raised hands,
// questions and "answered" marks between classrooms and the teacher console, the classroom
// list the teacher sees, and what a classroom's player measures. Reconnects by itself with
// backoff. DOM-free (WebSocket, URL and timers only) so node's test runner can drive it with a
// stand-in WebSocket.
//
//   const channel = new RoomChannel(url, { onMessage: (m) => …, onState: (s) => … });
//   channel.start();  channel.send({ type: "hand" });  channel.close();

import { Backoff, wait } from "./retry.js";

/**
 * The channel URL for a page at `base` (its location): ws: or wss: like the page.
 * @param {string|URL} base
 * @param {string} room
 * @param {string} token
 */
export function channelUrl(base, room, token) {
  const url = new URL(`/ws/${encodeURIComponent(room)}`, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", token);
  return url.href;
}

/** @typedef {"connecting"|"open"|"closed"} ChannelState */

export class RoomChannel {
  /**
   * @param {string} url
   * @param {{onMessage?: (message: any) => void, onState?: (state: ChannelState) => void,
   *          WebSocketImpl?: typeof WebSocket, backoff?: Backoff}} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.onMessage = options.onMessage ?? (() => {});
    this.onState = options.onState ?? (() => {});
    this.WebSocketImpl = options.WebSocketImpl ?? globalThis.WebSocket;
    this.backoff = options.backoff ?? new Backoff({ firstS: 1, maxS: 15 });
    /** @type {ChannelState} */
    this.state = "closed";
    /** @type {WebSocket|null} */
    this.socket = null;
    this.controller = new AbortController();
    this.running = false;
  }

  /** Connect, and connect again after every loss until `close()`. */
  start() {
    if (this.running) return;
    this.running = true;
    this.loop().catch(() => {});
  }

  /** Send a message now; false when the channel is not open (the caller may say so). */
  send(message) {
    if (!this.socket || this.state !== "open") return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  close() {
    this.running = false;
    this.controller.abort(new DOMException("the channel was closed", "AbortError"));
    this.socket?.close();
    this.setState("closed");
  }

  /** @param {ChannelState} state */
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }

  async loop() {
    const signal = this.controller.signal;
    while (this.running && !signal.aborted) {
      const opened = await this.connectOnce();
      if (!this.running) return;
      if (opened) this.backoff.reset();
      await wait(this.backoff.next() * 1000, signal);
    }
  }

  /** One connection, until it closes; resolves with whether it had opened. */
  connectOnce() {
    return new Promise((resolve) => {
      this.setState("connecting");
      let opened = false;
      let socket;
      try {
        socket = new this.WebSocketImpl(this.url);
      } catch {
        resolve(false);
        return;
      }
      this.socket = socket;
      socket.addEventListener("open", () => {
        opened = true;
        this.setState("open");
      });
      socket.addEventListener("message", (event) => {
        let message;
        try {
          message = JSON.parse(String(event.data));
        } catch {
          return; // not ours
        }
        this.onMessage(message);
      });
      socket.addEventListener("close", () => {
        if (this.socket === socket) this.socket = null;
        if (this.running) this.setState("connecting");
        resolve(opened);
      });
    });
  }
}
