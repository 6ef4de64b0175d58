// whip.js: the WHIP/WHEP client's protocol logic against a fake peer connection and fetch.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { parseRetryAfter, play, publish, WhipError } from "../static/whip.js";
import { FakeMediaStream, FakePeerConnection, FakeTrack, fakeFetch, installBrowser } from "./fakes.js";

const ANSWER = "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
let uninstall = () => {};
afterEach(() => uninstall());

function created(location = "/whep/maths-1/abc") {
  return () => new Response(ANSWER, { status: 201, headers: { Location: location,
                                                               "Content-Type": "application/sdp" } });
}

test("parseRetryAfter reads seconds and HTTP dates, and nothing else", () => {
  assert.equal(parseRetryAfter("5"), 5);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter(""), null);
  assert.equal(parseRetryAfter("soon"), null);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now), 30);
  assert.equal(parseRetryAfter("Wed, 31 Dec 2025 23:59:00 GMT", now), 0);
});

test("play POSTs a recvonly offer with the token and end-of-candidates, then sets the answer", async () => {
  const { fetch, calls } = fakeFetch({ "POST /whep/maths-1": created() });
  uninstall = installBrowser(fetch);
  const session = await play("http://server.test/whep/maths-1", "tok", { iceServers: [] });
  const post = calls.find((c) => c.method === "POST");
  assert.equal(post.init.headers["Content-Type"], "application/sdp");
  assert.equal(post.init.headers.Authorization, "Bearer tok");
  // every m-section says its candidates are complete (RFC 8840), once
  const sections = post.init.body.split("\r\nm=").slice(1);
  assert.equal(sections.length, 2);
  for (const s of sections) assert.equal(s.match(/a=end-of-candidates/g).length, 1);
  const pc = FakePeerConnection.last;
  assert.equal(pc.config.bundlePolicy, "max-bundle");
  assert.deepEqual(pc.transceivers.map((t) => [t.kind, t.init.direction]),
                   [["video", "recvonly"], ["audio", "recvonly"]]);
  assert.equal(pc.remoteDescription.sdp, ANSWER);
  assert.equal(session.location, "http://server.test/whep/maths-1/abc");
  assert.equal(session.screen, null);
});

test("play with screen asks for two video lines and keeps the screen's track apart", async () => {
  const { fetch } = fakeFetch({ "POST /whep/r": created("/whep/r/s1") });
  uninstall = installBrowser(fetch);
  const session = await play("http://server.test/whep/r", "tok", { iceServers: [], screen: true });
  const pc = FakePeerConnection.last;
  assert.deepEqual(pc.transceivers.map((t) => t.kind), ["video", "video", "audio"]);
  pc.deliver(0, new FakeTrack("video", "camera"));
  pc.deliver(1, new FakeTrack("video", "screen"));
  pc.deliver(2, new FakeTrack("audio", "mic"));
  assert.deepEqual(session.stream.getTracks().map((t) => t.id), ["camera", "mic"]);
  assert.deepEqual(session.screen.getTracks().map((t) => t.id), ["screen"]);
});

test("publish sends camera, microphone and a screen as sendonly lines", async () => {
  const { fetch } = fakeFetch({ "POST /whip/r": created("/whip/r/p1") });
  uninstall = installBrowser(fetch);
  const stream = new FakeMediaStream([new FakeTrack("audio"), new FakeTrack("video")]);
  await publish("http://server.test/whip/r", "tok", stream,
                { iceServers: [], screen: new FakeTrack("video", "screen") });
  const pc = FakePeerConnection.last;
  assert.deepEqual(pc.transceivers.map((t) => [t.kind, t.init.direction]),
                   [["audio", "sendonly"], ["video", "sendonly"], ["video", "sendonly"]]);
  assert.equal(pc.transceivers[2].track.id, "screen");
});

test("a 409 becomes a WhipError with the server's message and Retry-After", async () => {
  const { fetch } = fakeFetch({
    "POST /whep/r": () => new Response(JSON.stringify({ error: "conflict", message: "not live" }),
                                       { status: 409, headers: { "Retry-After": "3" } }),
  });
  uninstall = installBrowser(fetch);
  await assert.rejects(play("http://server.test/whep/r", "tok", { iceServers: [] }), (err) => {
    assert.ok(err instanceof WhipError);
    assert.equal(err.status, 409);
    assert.equal(err.code, "conflict");
    assert.equal(err.retryAfter, 3);
    assert.match(err.message, /not live/);
    return true;
  });
  assert.ok(FakePeerConnection.last.closed, "the peer connection of a failed attempt is closed");
});

test("a server that cannot be reached is status 0, code network", async () => {
  uninstall = installBrowser(async () => { throw new TypeError("Failed to fetch"); });
  await assert.rejects(publish("http://server.test/whip/r", "tok",
                               new FakeMediaStream([new FakeTrack("video")]), { iceServers: [] }),
                       (err) => err instanceof WhipError && err.status === 0 && err.code === "network");
});

test("a 201 without Location is an error, not a session", async () => {
  const { fetch } = fakeFetch({ "POST /whep/r": () => new Response(ANSWER, { status: 201 }) });
  uninstall = installBrowser(fetch);
  await assert.rejects(play("http://server.test/whep/r", "tok", { iceServers: [] }),
                       /no Location header/);
});

test("close DELETEs the session resource once and closes the peer connection", async () => {
  const { fetch, calls } = fakeFetch({
    "POST /whep/r": created("/whep/r/xyz"),
    "DELETE /whep/r/xyz": () => new Response("", { status: 200 }),
  });
  uninstall = installBrowser(fetch);
  const session = await play("http://server.test/whep/r", "tok", { iceServers: [] });
  assert.equal(await session.close(), 200);
  assert.equal(await session.close(), 200);
  assert.equal(calls.filter((c) => c.method === "DELETE").length, 1);
  assert.ok(FakePeerConnection.last.closed);
});

test("a classroom session reads its level and pins a ceiling with PUT", async () => {
  const info = { level: "low", reason: "pinned by the classroom", pinned: "low", changes: 1 };
  const { fetch, calls } = fakeFetch({
    "POST /whep/r": created("/whep/r/s9"),
    "GET /whep/r/s9/level": () => Response.json({ ...info, level: "full", pinned: null }),
    "PUT /whep/r/s9/level": () => Response.json(info),
  });
  uninstall = installBrowser(fetch);
  const session = await play("http://server.test/whep/r", "tok", { iceServers: [] });
  assert.equal((await session.level()).level, "full");
  assert.deepEqual(await session.pinLevel("low"), info);
  const put = calls.find((c) => c.method === "PUT");
  assert.equal(put.init.headers.Authorization, "Bearer tok");
  assert.deepEqual(JSON.parse(put.init.body), { pin: "low" });
});

test("a level the relay refuses is a WhipError with its message", async () => {
  const { fetch } = fakeFetch({
    "POST /whep/r": created("/whep/r/s9"),
    "PUT /whep/r/s9/level": () => Response.json(
      { error: "bad_request", message: '"pin" must be one of full, low, audio or null' },
      { status: 400 }),
  });
  uninstall = installBrowser(fetch);
  const session = await play("http://server.test/whep/r", "tok", { iceServers: [] });
  await assert.rejects(session.pinLevel(/** @type {any} */ ("ultra")),
                       (err) => err instanceof WhipError && err.status === 400 &&
                         /must be one of/.test(err.message));
});
