// Retry timing shared by the pages: exponential backoff with jitter, abortable waits, and
// the moment a peer connection counts as lost. DOM-free.

/** Exponential backoff: 1, 2, 4 … `maxS` seconds, each ±20 % so classrooms spread out. */
export class Backoff {
  constructor({ firstS = 1, maxS = 30, jitter = 0.2 } = {}) {
    this.firstS = firstS;
    this.maxS = maxS;
    this.jitter = jitter;
    this.attempt = 0;
  }

  /** Seconds to wait before the next attempt (whole seconds, for countdowns). */
  next() {
    const base = Math.min(this.maxS, this.firstS * 2 ** this.attempt);
    this.attempt += 1;
    const spread = 1 + this.jitter * (2 * Math.random() - 1);
    return Math.max(1, Math.round(base * spread));
  }

  reset() {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or rejects with an AbortError as soon as `signal` aborts. */
export function wait(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Count down `seconds`, calling `tick(left)` each second; abortable like `wait`. */
export async function countdown(seconds, tick, signal) {
  for (let left = Math.max(0, Math.round(seconds)); left > 0; left -= 1) {
    tick(left);
    await wait(1000, signal);
  }
}

/**
 * Resolves with the reason once `pc` is lost: its DTLS transport closed or failed (the server
 * ended the session: Chromium keeps connectionState "connected" after a DTLS close_notify,
 * measured), connection state "failed" or "closed", or "disconnected" for longer than
 * `graceMs` (Chromium declares "failed" only after ~30 s without consent responses).
 * Rejects with the abort reason when `signal` aborts.
 */
/**
 * @param {RTCPeerConnection} pc
 * @param {{graceMs?: number, signal?: AbortSignal}} [options]
 * @returns {Promise<string>}
 */
export function connectionLost(pc, { graceMs = 3000, signal = undefined } = {}) {
  return new Promise((resolve, reject) => {
    let timer = null;
    const transports = new Set(
      [...pc.getSenders(), ...pc.getReceivers()].map((x) => x.transport).filter(Boolean));
    const finish = (outcome) => {
      clearTimeout(timer);
      pc.removeEventListener("connectionstatechange", check);
      for (const transport of transports) transport.removeEventListener("statechange", check);
      signal?.removeEventListener("abort", onAbort);
      outcome();
    };
    const check = () => {
      const state = pc.connectionState;
      const dtls = [...transports].find((t) => t.state === "closed" || t.state === "failed");
      if (dtls) {
        finish(() => resolve(`dtls-${dtls.state}`));
      } else if (state === "failed" || state === "closed") {
        finish(() => resolve(state));
      } else if (state === "disconnected") {
        if (timer === null) {
          timer = setTimeout(() => finish(() => resolve("disconnected")), graceMs);
        }
      } else {
        clearTimeout(timer);
        timer = null;
      }
    };
    const onAbort = () => finish(() => reject(signal.reason));
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    pc.addEventListener("connectionstatechange", check);
    for (const transport of transports) transport.addEventListener("statechange", check);
    check();
  });
}

/**
 * Resolves once `pc` is connected; rejects if it fails first, takes longer than `timeoutMs`,
 * or `signal` aborts.
 */
export function connected(pc, signal, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => done(() => reject(
      new Error(`the connection was not established within ${timeoutMs / 1000} s`))), timeoutMs);
    const done = (outcome) => {
      clearTimeout(timer);
      pc.removeEventListener("connectionstatechange", check);
      signal?.removeEventListener("abort", onAbort);
      outcome();
    };
    const check = () => {
      const state = pc.connectionState;
      if (state === "connected") done(resolve);
      else if (state === "failed" || state === "closed") {
        done(() => reject(new Error(`the connection ${state} before it was established`)));
      }
    };
    const onAbort = () => done(() => reject(signal.reason));
    if (signal?.aborted) {
      done(() => reject(signal.reason));
      return;
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    pc.addEventListener("connectionstatechange", check);
    check();
  });
}

export function isAbort(err) {
  return err?.name === "AbortError";
}
