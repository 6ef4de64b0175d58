// HLS playback of a recorded lesson in a <video>: the browser's own HLS where it has it
// (`canPlayType('application/vnd.apple.mpegurl')`: Safari, iOS, recent Chromium), else the
// vendored hls.js over Media Source Extensions. No UI strings live here.
//
//   const playback = await attach(video, "/api/lessons/ID/playlist.m3u8?token=…", {
//     onError: (err) => show(err),   // a PlaybackError, once playback has failed for good
//   });
//   playback.engine;                 // "native" or "hls.js"
//   playback.destroy();
//
// With engine "auto", a native player that rejects the source before showing anything
// (some browsers answer "maybe" for HLS and then cannot play fMP4 or Opus) is replaced by
// hls.js when the browser has MSE.
//
// hls.js is imported only when it is needed. Its ES module build has no bundled Web Worker;
// the recordings are fMP4, which hls.js passes through without transmuxing, so playback runs
// on the main thread (`enableWorker: false`).

export const HLS_TYPE = "application/vnd.apple.mpegurl";
export const HLS_MODULE = "/static/vendor/hls.js/hls.min.mjs";
export const ENGINES = ["native", "hls.js"];

/** Why playback failed: kind "network" (with the HTTP status, 0 if none), "media", "unsupported". */
export class PlaybackError extends Error {
  constructor(kind, message, { status = 0 } = {}) {
    super(message);
    this.name = "PlaybackError";
    this.kind = kind;
    this.status = status;
  }
}

/** Whether the browser says it plays HLS itself. */
export function hasNativeHls(video) {
  return video.canPlayType(HLS_TYPE) !== "";
}

function hasMse() {
  return "MediaSource" in window || "ManagedMediaSource" in window;
}

const MEDIA_ERRORS = {
  1: "playback was aborted",
  2: "a network error stopped the download",
  3: "the video could not be decoded",
  4: "the browser cannot play this source",
};

/** The engine to use: "native" or "hls.js" when asked, else native where available. */
export function chooseEngine(video, asked = "auto") {
  if (ENGINES.includes(asked)) return asked;
  return hasNativeHls(video) ? "native" : "hls.js";
}

/**
 * Play the HLS playlist `url` in `video`. Resolves once the source is attached, with
 * {engine, hls (the hls.js instance or null), destroy()}; later failures go to `onError`.
 */
/**
 * @param {HTMLVideoElement} video
 * @param {string} url
 * @param {{engine?: string, onError?: (err: any) => void,
 *          onEngine?: (engine: string) => void}} [options]
 */
export async function attach(video, url, { engine = "auto", onError = () => {},
                                           onEngine = () => {} } = {}) {
  const chosen = chooseEngine(video, engine);
  const playback = { engine: chosen, hls: null, destroy: () => {} };
  if (chosen === "native") {
    const fallBack = engine === "auto" && hasMse();
    const onVideoError = () => {
      const error = video.error;
      if (fallBack && video.readyState === 0 && error && (error.code === 3 || error.code === 4)) {
        // The native player gave up before showing a frame: use hls.js instead.
        console.info("native HLS failed (%s); using hls.js", error.message || error.code);
        video.removeEventListener("error", onVideoError);
        video.removeAttribute("src");
        video.load();
        attachHlsJs(video, url, onError).then((hls) => {
          Object.assign(playback, { engine: "hls.js", hls, destroy: () => hls.destroy() });
          onEngine(playback.engine);
        }, onError);
        return;
      }
      onError(mediaError(error));
    };
    video.addEventListener("error", onVideoError);
    video.src = url;
    playback.destroy = () => {
      video.removeEventListener("error", onVideoError);
      video.removeAttribute("src");
      video.load();
    };
  } else {
    const hls = await attachHlsJs(video, url, onError);
    playback.hls = hls;
    playback.destroy = () => hls.destroy();
  }
  onEngine(playback.engine);
  return playback;
}

function mediaError(error) {
  const code = error?.code ?? 0;
  return new PlaybackError("media", error?.message || MEDIA_ERRORS[code] || "media error");
}

async function attachHlsJs(video, url, onError) {
  if (!hasMse()) throw new PlaybackError("unsupported", "no Media Source Extensions");
  const { default: Hls } = await import(HLS_MODULE);
  if (!Hls.isSupported()) throw new PlaybackError("unsupported", "hls.js is not supported here");
  const hls = new Hls({ enableWorker: false });
  let recovered = false;
  hls.on(Hls.Events.ERROR, (event, data) => {
    if (!data.fatal) return;
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
      recovered = true; // one attempt, as hls.js advises for decoder hiccups
      hls.recoverMediaError();
      return;
    }
    const status = data.response?.code ?? 0;
    const kind = data.type === Hls.ErrorTypes.NETWORK_ERROR ? "network" : "media";
    hls.destroy();
    onError(new PlaybackError(kind, `${data.details}${status ? ` (HTTP ${status})` : ""}`,
                              { status }));
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return hls;
}
