// retry.js: backoff timing and abortable waits.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, countdown, isAbort, wait } from "../static/retry.js";

test("backoff doubles up to its cap, within ±20 %, and starts over after reset", () => {
  const backoff = new Backoff({ firstS: 1, maxS: 30, jitter: 0.2 });
  const delays = Array.from({ length: 8 }, () => backoff.next());
  const bases = [1, 2, 4, 8, 16, 30, 30, 30];
  delays.forEach((d, i) => {
    assert.ok(d >= Math.max(1, Math.round(bases[i] * 0.8)) && d <= Math.round(bases[i] * 1.2),
              `attempt ${i}: ${d} s for a base of ${bases[i]} s`);
  });
  backoff.reset();
  assert.ok(backoff.next() <= 1);
});

test("wait resolves after its time and rejects at once when aborted", async () => {
  await wait(1);
  const controller = new AbortController();
  const waiting = wait(60_000, controller.signal);
  controller.abort(new DOMException("stop", "AbortError"));
  await assert.rejects(waiting, (err) => isAbort(err));
  await assert.rejects(wait(1, controller.signal), (err) => isAbort(err));
});

test("countdown ticks every whole second left and stops when aborted", async () => {
  const controller = new AbortController();
  const ticks = [];
  const running = countdown(3, (left) => {
    ticks.push(left);
    if (left === 2) controller.abort(new DOMException("stop", "AbortError"));
  }, controller.signal);
  await assert.rejects(running, (err) => isAbort(err));
  assert.deepEqual(ticks, [3, 2]);
});
