// params.js: what a page reads from its address, and links that carry token and language.
import assert from "node:assert/strict";
import { test } from "node:test";

import { lessonFromPath, pageLink, roomFromPath, tokenFromUrl } from "../static/params.js";

test("room and lesson come from the path, decoded", () => {
  assert.equal(roomFromPath("/class/maths-5a"), "maths-5a");
  assert.equal(roomFromPath("/teach/%E6%95%B0%E5%AD%A6/"), "数学");
  assert.equal(roomFromPath("/class"), "");
  assert.equal(lessonFromPath("/catalog/20260901-000000-abcd"), "20260901-000000-abcd");
});

test("the token comes from ?token=, empty when absent", () => {
  assert.equal(tokenFromUrl("?lang=en&token=a.b.c"), "a.b.c");
  assert.equal(tokenFromUrl(""), "");
});

test("links keep the token and language", () => {
  globalThis.location = /** @type {any} */ (new URL("http://school.test/class/r?token=t1"));
  try {
    assert.equal(pageLink("/", { token: "t1", lang: "en" }), "/?token=t1&lang=en");
    assert.equal(pageLink("/catalog", { token: "", lang: "" }), "/catalog");
  } finally {
    delete globalThis.location;
  }
});
