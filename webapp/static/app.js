// deepfake-edge web page: send one image to POST /api/detect and show the verdict.
// Page state lives on <body>: data-state = idle | loading | result | error, data-verdict = none | real | fake.
(function () {
  "use strict";

  var THEME_KEY = "deepfake-edge:theme";
  var body = document.body;
  var $ = function (id) { return document.getElementById(id); };
  var maxUploadBytes = Number(body.dataset.maxUploadBytes);
  var busy = false;

  // ---------- theme ----------
  function applyTheme(theme) {
    document.documentElement.dataset.theme = theme;
    var dark = theme === "dark";
    var toggle = $("theme-toggle");
    toggle.setAttribute("aria-pressed", String(dark));
    toggle.querySelector(".theme-toggle__icon").textContent = dark ? "☀️" : "🌙";
    toggle.querySelector(".theme-toggle__text").textContent = dark ? "Light mode" : "Dark mode";
  }
  $("theme-toggle").addEventListener("click", function () {
    var next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    try { window.localStorage.setItem(THEME_KEY, next); } catch (e) { /* storage disabled: theme lasts this visit */ }
    applyTheme(next);
  });
  applyTheme(document.documentElement.dataset.theme === "dark" ? "dark" : "light");

  // ---------- state ----------
  function setSides(verdict) {
    $("side-left").classList.toggle("is-active", verdict === "fake");
    $("side-right").classList.toggle("is-active", verdict === "real");
  }

  function setState(state, verdict) {
    body.dataset.state = state;
    body.dataset.verdict = verdict || "none";
    setSides(verdict);
  }

  function showError(message, title) {
    setState("error");
    $("result").hidden = true;
    $("error-title").textContent = title || "We couldn't check that image.";
    $("error-message").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-message").textContent = "";
  }

  function formatPercent(value) { return (value * 100).toFixed(1) + "%"; }

  // ---------- upload ----------
  function analyse(file) {
    if (!file || busy) { return; }
    clearError();
    $("file-name").hidden = false;
    $("file-name").textContent = "📎 " + file.name + " (" + formatSize(file.size) + ")";
    if (file.size > maxUploadBytes) {
      // Refuse before sending: the server would answer 413 only after receiving the whole body.
      showError("The upload is too large: images up to " + body.dataset.maxUploadText + " are accepted.");
      return;
    }
    busy = true;
    $("upload-button").disabled = true;
    setState("loading");
    $("result").hidden = false;
    $("viewer").hidden = true;
    $("details").hidden = true;
    $("verdict").textContent = "Analysing…";
    $("verdict-explain").textContent = "";
    $("verdict-model").textContent = "";

    var form = new FormData();
    form.append("file", file, file.name);
    form.append("heatmap_alpha", "1");  // full-strength overlay; the opacity slider blends it in the page
    fetch("api/detect", { method: "POST", body: form })
      .then(function (response) {
        return response.json().then(
          function (payload) { return { ok: response.ok, status: response.status, payload: payload }; },
          function () { return { ok: false, status: response.status, payload: {} }; }
        );
      })
      .then(function (answer) {
        if (answer.ok) { showResult(answer.payload); return; }
        var title = answer.status >= 500 ? "The detector is not available right now." : null;
        showError(answer.payload.error || describeStatus(answer.status), title);
      })
      .catch(function () {
        showError("The web server could not be reached. Check that 'deepfake-edge serve' is still running.",
          "Connection problem.");
      })
      .finally(function () {
        busy = false;
        $("upload-button").disabled = false;
        $("file-input").value = "";
      });
  }

  function describeStatus(status) {
    if (status === 413) { return "The upload is too large."; }
    if (status === 503) { return "The detection server is not available right now. Please try again in a moment."; }
    if (status >= 500) { return "Something went wrong on the server (HTTP " + status + "). Please try again."; }
    return "The image was refused (HTTP " + status + ").";
  }

  function formatSize(bytes) {
    if (bytes >= 1048576) { return (bytes / 1048576).toFixed(1) + " MB"; }
    if (bytes >= 1024) { return Math.round(bytes / 1024) + " KB"; }
    return bytes + " bytes";
  }

  // ---------- result ----------
  function showResult(r) {
    var verdict = r.label === "Fake" ? "fake" : "real";
    setState("result", verdict);
    $("verdict").textContent = r.label + " – " + formatPercent(r.confidence);
    $("verdict-explain").textContent = verdict === "fake"
      ? "⚠️ This image shows signs of manipulation."
      : "✅ No signs of manipulation found.";
    $("verdict-model").textContent = r.model_title + " (" + r.model + ", version " + r.model_version +
      ") · fake probability " + formatPercent(r.fake_probability) + " · threshold " + formatPercent(r.threshold);
    $("meter-fill").style.left = (r.fake_probability * 100).toFixed(1) + "%";
    $("meter-threshold").style.left = (r.threshold * 100).toFixed(1) + "%";

    var viewer = $("viewer");
    if (r.heatmap) {
      $("viewer-image").src = r.heatmap.image;
      $("viewer-overlay").src = r.heatmap.overlay;
      viewer.hidden = false;
      applyHeatmapControls();
    } else {
      viewer.hidden = true;
    }
    renderScores(r);
    $("details").hidden = false;
    $("dropzone").classList.add("is-compact");
    $("result").scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function renderScores(r) {
    var rows = $("scores-body");
    rows.textContent = "";
    r.models.forEach(function (m) {
      var tr = document.createElement("tr");
      var name = document.createElement("th");
      name.scope = "row";
      name.textContent = m.title;
      var tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = m.role === "primary" ? "verdict" : "baseline";
      name.appendChild(tag);
      tr.appendChild(name);
      if (m.error) {
        var cell = document.createElement("td");
        cell.colSpan = 5;
        cell.textContent = "unavailable: " + m.error;
        tr.appendChild(cell);
      } else {
        var label = cell_(m.verdict);
        label.className = m.label === "Fake" ? "is-fake" : "is-real";
        tr.appendChild(label);
        tr.appendChild(cell_(formatPercent(m.fake_probability)));
        tr.appendChild(cell_(formatPercent(m.threshold)));
        tr.appendChild(cell_(m.logit.toFixed(3)));
        tr.appendChild(cell_(m.version));
      }
      tr.dataset.model = m.name;
      rows.appendChild(tr);
    });
    $("raw-scores").textContent = JSON.stringify(r.raw_scores, null, 2);
  }

  function cell_(text) {
    var td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  // ---------- heatmap controls ----------
  function applyHeatmapControls() {
    var on = $("heatmap-toggle").checked;
    var opacity = Number($("heatmap-opacity").value) / 100;
    $("viewer").classList.toggle("is-heatmap-off", !on);
    $("viewer-overlay").style.opacity = String(opacity);
    $("heatmap-opacity").disabled = !on;
    $("heatmap-opacity-value").textContent = Math.round(opacity * 100) + "%";
  }
  $("heatmap-toggle").addEventListener("change", applyHeatmapControls);
  $("heatmap-opacity").addEventListener("input", applyHeatmapControls);

  // ---------- inputs: button, drag and drop, paste ----------
  $("upload-button").addEventListener("click", function () { $("file-input").click(); });
  $("file-input").addEventListener("change", function (event) { analyse(event.target.files[0]); });

  var dropzone = $("dropzone");
  ["dragenter", "dragover"].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.add("is-dragover");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    dropzone.addEventListener(type, function (event) {
      event.preventDefault();
      dropzone.classList.remove("is-dragover");
    });
  });
  dropzone.addEventListener("drop", function (event) {
    var files = event.dataTransfer && event.dataTransfer.files;
    if (files && files.length) { analyse(files[0]); }
  });
  // A file dropped outside the drop zone would otherwise replace the page with the image.
  window.addEventListener("dragover", function (event) { event.preventDefault(); });
  window.addEventListener("drop", function (event) { event.preventDefault(); });
  window.addEventListener("paste", function (event) {
    var files = event.clipboardData && event.clipboardData.files;
    if (files && files.length) { analyse(files[0]); }
  });
})();
