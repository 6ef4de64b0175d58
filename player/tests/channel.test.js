// channel.js: the room channel's URL, sending, message parsing and reconnecting.
import assert from "node:assert/strict";
import { test } from "node:test";

import { channelUrl, RoomChannel } from "../static/channel.js";
import { Backoff } from "../static/retry.js";
import { FakeWebSocket } from "./fakes.js";

test("the channel URL follows the page's scheme and carries room and token", () => {
  assert.equal(channelUrl("http://school.test:8080/class/a b", "a b", "t/k"),
               "ws://school.test:8080/ws/a%20b?token=t%2Fk");
  assert.equal(channelUrl("https://school.test/teach/r1", "r1", "x"),
               "wss://school.test/ws/r1?token=x");
});

/** A Backoff that never waits, so reconnecting is immediate in tests. */
class NoWait extends Backoff {
  next() { return 0; }
}

test("messages flow while open; a lost socket is replaced by a new one", async () => {
  FakeWebSocket.made = [];
  const messages = [];
  const states = [];
  const channel = new RoomChannel("ws://x/ws/r?token=t", {
    WebSocketImpl: /** @type {any} */ (FakeWebSocket), backoff: new NoWait(),
    onMessage: (m) => messages.push(m), onState: (s) => states.push(s),
  });
  channel.start();
  assert.equal(channel.send({ type: "hand" }), false, "nothing is sent before the socket opens");
  const first = FakeWebSocket.made[0];
  first.open();
  assert.equal(channel.send({ type: "hand" }), true);
  assert.deepEqual(first.sent, [{ type: "hand" }]);
  first.receive({ type: "asked", question: { id: 1 } });
  first.receive("not json: ignored");
  assert.deepEqual(messages, [{ type: "asked", question: { id: 1 } }]);

  first.close(); // the server went away
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(FakeWebSocket.made.length, 2, "a new socket was opened");
  FakeWebSocket.made[1].open();
  assert.deepEqual(states, ["connecting", "open", "connecting", "open"]);

  channel.close();
  assert.equal(channel.state, "closed");
  assert.ok(FakeWebSocket.made[1].closed);
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.equal(FakeWebSocket.made.length, 2, "no reconnect after close()");
});
