// What the pages add to `window` for tests and for people debugging in the console: each page
// exposes its live state as `window.classcast` (see the end of each page's module).
interface Window {
  classcast?: Record<string, unknown>;
}
