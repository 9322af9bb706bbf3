// Runs before the page paints: apply the remembered theme (or the system preference) at once.
(function () {
  "use strict";
  var stored = null;
  try { stored = window.localStorage.getItem("deepfake-edge:theme"); } catch (e) { /* storage disabled */ }
  var prefersDark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = stored === "dark" || stored === "light" ? stored : (prefersDark ? "dark" : "light");
})();
