// quality.js: how the teacher console grades a classroom's link.
import assert from "node:assert/strict";
import { test } from "node:test";

import { grade, linkFigures } from "../static/quality.js";

const link = (loss, rtt) => ({ loss, rtt_ms: rtt, kbps: 800 });

test("grades from loss, round-trip time, frame rate and freezes", () => {
  assert.equal(grade(null), null);
  assert.equal(grade({ loss: null, rtt_ms: null, kbps: null }), null);
  assert.equal(grade(link(0, 20)), "good");
  assert.equal(grade(link(0.03, 20)), "fair");
  assert.equal(grade(link(0, 300)), "fair");
  assert.equal(grade(link(0.1, 20)), "poor");
  assert.equal(grade(link(0, 700)), "poor");
  assert.equal(grade(link(0, 20), { fps: 20, kbps: 800, lost: 0, freezes: 0 }), "good");
  assert.equal(grade(link(0, 20), { fps: 8, kbps: 800, lost: 0, freezes: 0 }), "fair");
  assert.equal(grade(link(0, 20), { fps: 2, kbps: 800, lost: 0, freezes: 0 }), "poor");
  assert.equal(grade(link(0, 20), { fps: 20, kbps: 800, lost: 0, freezes: 9 }), "fair");
  assert.equal(grade(null, { fps: 20, kbps: 800, lost: 0, freezes: 0 }), "good");
});

test("figures are rounded for people, with a dash for what is unknown", () => {
  assert.deepEqual(linkFigures({ rtt_ms: 12.46, loss: 0.0123, kbps: 812.7 }),
                   { rtt: "12", loss: "1.2", kbps: "813" });
  assert.deepEqual(linkFigures(null), { rtt: "–", loss: "–", kbps: "–" });
});
