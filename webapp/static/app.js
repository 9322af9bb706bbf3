// deepfake-edge web page: send one image or video to POST /api/detect and show the verdict.
// Page state lives on <body>: data-state = idle | loading | result | error, data-verdict = none | real | fake,
// data-kind = image | video once there is a result.
(function () {
  "use strict";

  var THEME_KEY = "deepfake-edge:theme";
  var body = document.body;
  var $ = function (id) { return document.getElementById(id); };
  var maxUploadBytes = Number(body.dataset.maxUploadBytes);
  var maxVideoBytes = Number(body.dataset.maxVideoBytes) || maxUploadBytes;
  var SVG_NS = "http://www.w3.org/2000/svg";
  var busy = false;
  var lastVideo = null;  // the video answer shown, so that its timeline can be redrawn at a new width

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
    $("error-title").textContent = title || "We couldn't check that file.";
    $("error-message").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-message").textContent = "";
  }

  // A percentage rounded DOWN to 0.1 % and capped at 99.9 %: never "100.0%", no model is that sure.
  // Keep in step with format_confidence in deepfake_edge/client/results.py (the server's `verdict`).
  function formatConfidence(value) { return (Math.floor(Math.min(value, 0.999) * 1000) / 10).toFixed(1) + "%"; }
  // Probabilities (fake probability, region scores) read the same way.
  var formatPercent = formatConfidence;
  // The threshold is a setting, not a claim: shown as it is.
  function formatThreshold(value) { return (value * 100).toFixed(1) + "%"; }

  // ---------- upload ----------
  // What the file is, from its first bytes, as the server decides it (deepfake_edge/video.py: sniff_kind):
  // "video" (MP4/MOV, AVI, Matroska/WebM), "image", or "gif" (a video when animated: the server tells).
  function sniffKind(file) {
    if (!file.slice || !window.Response) { return Promise.resolve("gif"); }
    return new Response(file.slice(0, 64)).arrayBuffer().then(function (buffer) {
      var b = new Uint8Array(buffer);
      var text = function (start, end) { return String.fromCharCode.apply(null, b.subarray(start, end)); };
      if (text(4, 8) === "ftyp") {
        return ["heic", "heix", "heim", "heis", "mif1", "avif"].indexOf(text(8, 12)) >= 0 ? "image" : "video";
      }
      if (text(0, 4) === "RIFF" && text(8, 12) === "AVI ") { return "video"; }
      if (b[0] === 0x1a && b[1] === 0x45 && b[2] === 0xdf && b[3] === 0xa3) { return "video"; }
      if (text(0, 6) === "GIF87a" || text(0, 6) === "GIF89a") { return "gif"; }
      return "image";
    }, function () { return "gif"; });
  }

  function analyse(file) {
    if (!file || busy) { return; }
    busy = true;
    sniffKind(file).then(function (kind) { send(file, kind); }, function () { send(file, "gif"); });
  }

  function send(file, kind) {
    clearError();
    $("file-name").hidden = false;
    $("file-name").textContent = "📎 " + file.name + " (" + formatSize(file.size) + ")";
    // Refuse before sending: the server would answer 413 only after receiving the whole body.
    var limit = kind === "video" ? maxVideoBytes : kind === "image" ? maxUploadBytes
      : Math.max(maxUploadBytes, maxVideoBytes);
    if (file.size > limit) {
      busy = false;
      $("file-input").value = "";
      showError(kind === "video"
        ? "The video is too large: videos up to " + body.dataset.maxVideoText + " are accepted."
        : "The upload is too large: images up to " + body.dataset.maxUploadText + " are accepted" +
          (kind === "image" ? "." : ", videos up to " + body.dataset.maxVideoText + "."));
      return;
    }
    $("upload-button").disabled = true;
    setState("loading");
    $("result").hidden = false;
    $("viewer").hidden = true;
    $("details").hidden = true;
    $("timeline").hidden = true;
    $("verdict").textContent = kind === "video" ? "Analysing the video…" : "Analysing…";
    $("verdict-explain").textContent = "";
    $("verdict-scope").textContent = "";
    $("verdict-notes").hidden = true;
    $("verdict-model").textContent = "";
    $("provenance").hidden = true;

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
    if (status === 504) { return "The analysis took too long. Please try again in a moment, or a shorter video."; }
    if (status === 503) { return "The detection server is not available right now. Please try again in a moment."; }
    if (status >= 500) { return "Something went wrong on the server (HTTP " + status + "). Please try again."; }
    return "The file was refused (HTTP " + status + ").";
  }

  function formatSize(bytes) {
    if (bytes >= 1048576) { return (bytes / 1048576).toFixed(1) + " MB"; }
    if (bytes >= 1024) { return Math.round(bytes / 1024) + " KB"; }
    return bytes + " bytes";
  }

  // ---------- result ----------
  function showResult(r) {
    var video = r.kind === "video";
    var verdict = r.label === "Fake" ? "fake" : "real";
    setState("result", verdict);
    body.dataset.kind = video ? "video" : "image";
    $("result").classList.toggle("is-video", video);
    $("verdict").textContent = r.label + " – " + formatConfidence(r.confidence);
    var regions = r.regions || [];
    var deciding = decidingRegion(regions);
    if (video) {
      $("verdict-explain").textContent = verdict === "fake"
        ? "⚠️ This model found signs of an edit in this video, most clearly at " + formatTime(r.peak.time_s) +
          (deciding && FRAME_WHERE[deciding.kind] ? FRAME_WHERE[deciding.kind] : "") + "."
        : "✅ No edit found by this model in the frames it checked.";
      $("verdict-scope").textContent = videoScopeText(r, verdict);
    } else {
      $("verdict-explain").textContent = verdict === "fake"
        ? "⚠️ This model found signs of an edit" + whereText(deciding) + "."
        : "✅ No edit found by this model.";
      $("verdict-scope").textContent = scopeText(r, regions, verdict);
    }
    renderNotes(r.notes || []);
    $("verdict-model").textContent = r.model_title + " (" + r.model + ", version " + r.model_version +
      ") · " + (video ? "video " : "") + "fake probability " + formatPercent(r.fake_probability) +
      " · threshold " + formatThreshold(r.threshold);
    $("meter-fill").style.left = (r.fake_probability * 100).toFixed(1) + "%";
    $("meter-threshold").style.left = (r.threshold * 100).toFixed(1) + "%";
    renderProvenance(r.provenance);

    lastVideo = video ? r : null;
    $("timeline").hidden = !video;
    if (video) { renderTimeline(r); }

    var viewer = $("viewer");
    if (r.heatmap) {
      $("viewer-image").src = r.heatmap.image;
      $("viewer-overlay").src = r.heatmap.overlay;
      $("viewer-image").alt = video ? "The frame at " + formatTime(r.peak.time_s) +
        ", where the fake probability peaked" : "The uploaded image";
      $("viewer-kicker").hidden = !video;
      $("viewer-kicker").textContent = video ? "Peak frame · " + formatTime(r.peak.time_s) + " · fake probability " +
        formatPercent(r.peak.fake_probability) : "";
      $("viewer-caption").textContent = video
        ? "The frame with the highest fake probability. Warmer colours mark the regions that weighed most " +
          "towards “Fake”, relative to the rest of this frame."
        : "Warmer colours mark the regions that weighed most towards “Fake”, relative to the rest of this image.";
      viewer.hidden = false;
      var size = video ? r.video : r.image;
      renderRegions(r, regions, deciding, verdict, size && size.width, size && size.height);
      applyHeatmapControls();
      applyRegionsControl();
    } else {
      viewer.hidden = true;
    }
    $("scores-title").textContent = video ? "The model's score (videos are scored by the verdict model only)"
      : "Every model's score";
    renderScores(r);
    $("details").hidden = false;
    $("dropzone").classList.add("is-compact");
    $("result").scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  // Seconds as the page shows them: "1.5 s", "1 min 05 s".
  function formatTime(seconds) {
    if (seconds < 60) { return seconds.toFixed(1) + " s"; }
    var whole = Math.round(seconds);
    return Math.floor(whole / 60) + " min " + String(whole % 60).padStart(2, "0") + " s";
  }

  var RULE_TEXT = {
    peak: "its highest-scoring frame",
    top3_mean: "the mean of its 3 highest-scoring frames",
    track_median: "the faces followed through it (and the rest of each frame)"
  };

  // What was checked, so that "Real" on a video does not read as "proven authentic" either.
  function videoScopeText(r, verdict) {
    var frames = r.timeline.length;
    var last = frames ? r.timeline[frames - 1].time_s : 0;
    var span = r.video.duration_s || last;
    var caveat = verdict === "fake"
      ? "it was trained on synthetic edits of photos: treat this as a hint, not proof."
      : "it was trained on synthetic edits of photos, so it can miss real-world fakes, and it does not check " +
        "the sound or the motion between frames.";
    return "It checked " + plural(frames, "frame") + " sampled over " + formatTime(span) +
      " of video, each for pasted, spliced, retouched or blended regions, and scored the video by " +
      (RULE_TEXT[r.rule] || "its frame scores") + "; " + caveat;
  }

  // ---------- Content Credentials: what the file says about its origin (deepfake_edge/provenance.py) ----------
  // Every string of `p` comes from the uploaded file: it is set with textContent, never as HTML.
  var PROVENANCE_ICONS = { valid: "✅", invalid: "⛔", error: "⚠️", none: "○" };
  var INVALID_TEXT = {
    "tampered": "the file was changed after it was signed.",
    "invalid signature": "the signature does not match the credentials.",
    "invalid certificate": "the signing certificate is not valid.",
    "revoked certificate": "the signing certificate was revoked.",
    "expired certificate": "the signing certificate had expired.",
    "ingredient invalid": "the credentials of a file it was made from are invalid.",
    "malformed": "the credentials are malformed.",
    "invalid timestamp": "the signature's time-stamp is not valid."
  };

  function renderProvenance(p) {
    var panel = $("provenance");
    panel.hidden = !p;
    if (!p) { return; }  // the server does not read provenance (--no-provenance)
    panel.dataset.status = p.status;
    $("provenance-icon").textContent = PROVENANCE_ICONS[p.status] || "";
    $("provenance-ai").hidden = !p.ai_generated;
    $("provenance-ai").title = p.ai_generated ? "Its Content Credentials declare generative AI (" +
      p.digital_source_types.join(", ") + ")" : "";
    $("provenance-status").textContent = provenanceStatus(p);
    var detail = provenanceDetail(p);
    $("provenance-detail").textContent = detail;
    $("provenance-detail").hidden = !detail;
    var metadata = p.metadata && p.metadata.summary;
    $("provenance-metadata").textContent = metadata ? "Metadata (unsigned, easily edited): " + metadata + "." : "";
    $("provenance-metadata").hidden = !metadata;
    $("provenance-note").hidden = p.status === "none";  // the common case stays short: its detail says enough
  }

  function provenanceStatus(p) {
    if (p.status === "valid") {
      return "Made with " + (p.claim_generator || "an unnamed tool") + ", signed by " + (p.signer || "an unnamed signer") +
        ", signature valid" + (p.trusted ? "" : " (untrusted signer)");
    }
    if (p.status === "invalid") { return "Credentials present but invalid (" + (p.validation || "failed validation") + ")"; }
    if (p.status === "error") {
      return (p.manifest_bytes !== null ? "Credentials present but could not be checked: " : "Could not be checked: ") +
        p.error;
    }
    return p.remote_manifest_url ? p.summary : "No Content Credentials";
  }

  function provenanceDetail(p) {
    var actions = p.actions.map(function (action) { return action.replace(/^c2pa\./, "").replace(/_/g, " "); });
    var history = (actions.length ? " Recorded: " + actions.join(", ") + "." : "") +
      (p.ingredient_count ? " Made from " + plural(p.ingredient_count, "other file") + "." : "");
    if (p.status === "valid") {
      var warning = p.validation === "ingredient invalid" ? " " + INVALID_TEXT[p.validation].replace(/^t/, "But t") : "";
      var trust = p.trusted ? "The file is unchanged since it was signed."
        : "The file is unchanged since it was signed; the signer is on no trust list this server knows, so its name is its own claim.";
      return trust + warning + history;
    }
    if (p.status === "invalid") {
      return "They fail validation: " + (INVALID_TEXT[p.validation] || "they no longer check out.") +
        (p.ai_generated ? " They say the file is AI-generated." : "");
    }
    if (p.status === "none") {
      return "The file carries no signed record of where it came from, as most photos do not: that says nothing " +
        "about whether it was edited.";
    }
    return "";
  }

  // ---------- timeline: fake probability over time, an inline SVG drawn at the width it is shown ----------
  function svg(name, attributes, parent) {
    var element = document.createElementNS(SVG_NS, name);
    Object.keys(attributes || {}).forEach(function (key) { element.setAttribute(key, attributes[key]); });
    if (parent) { parent.appendChild(element); }
    return element;
  }

  function renderTimeline(r) {
    var plot = $("timeline-plot");
    plot.textContent = "";
    var frames = r.timeline;
    var width = Math.max(260, Math.round(plot.clientWidth || 600));
    var height = width < 480 ? 150 : 180;
    var pad = { left: 44, right: 14, top: 16, bottom: 30 };
    var lastTime = frames.length ? frames[frames.length - 1].time_s : 0;
    var span = Math.max(r.video.duration_s || 0, lastTime) || 1;
    var x = function (t) { return pad.left + (width - pad.left - pad.right) * Math.min(t / span, 1); };
    var y = function (p) { return pad.top + (height - pad.top - pad.bottom) * (1 - p); };
    var round = function (v) { return Math.round(v * 10) / 10; };
    var peak = frames.filter(function (f) { return f.index === r.peak.index; })[0];
    var over = frames.filter(function (f) { return f.fake_probability >= r.threshold; }).length;

    var chart = svg("svg", { "class": "timeline__svg", viewBox: "0 0 " + width + " " + height, width: width,
      height: height, role: "img", "aria-labelledby": "timeline-svg-title timeline-svg-desc" }, plot);
    svg("title", { id: "timeline-svg-title" }, chart).textContent = "Fake probability over time";
    svg("desc", { id: "timeline-svg-desc" }, chart).textContent = plural(frames.length, "sampled frame") +
      " from " + formatTime(frames.length ? frames[0].time_s : 0) + " to " + formatTime(lastTime) + ". Peak " +
      formatPercent(r.peak.fake_probability) + " at " + formatTime(r.peak.time_s) + ". Threshold " +
      formatThreshold(r.threshold) + ": " + plural(over, "frame") + " at or above it.";

    var grid = svg("g", { "class": "timeline__grid", "aria-hidden": "true" }, chart);
    [0, 0.5, 1].forEach(function (p) {
      svg("line", { x1: pad.left, x2: width - pad.right, y1: round(y(p)), y2: round(y(p)) }, grid);
      var label = svg("text", { x: pad.left - 6, y: round(y(p)) + 4, "text-anchor": "end" }, grid);
      label.textContent = Math.round(p * 100) + "%";
    });
    [0, span / 2, span].forEach(function (t, i) {
      var label = svg("text", { x: round(x(t)), y: height - 8, "text-anchor": ["start", "middle", "end"][i] }, grid);
      label.textContent = formatTime(t);
    });
    var threshold = svg("line", { "class": "timeline__threshold", x1: pad.left, x2: width - pad.right,
      y1: round(y(r.threshold)), y2: round(y(r.threshold)), "aria-hidden": "true" }, chart);
    svg("title", {}, threshold).textContent = "threshold " + formatThreshold(r.threshold);

    svg("polyline", { "class": "timeline__line", "aria-hidden": "true", points: frames.map(function (f) {
      return round(x(f.time_s)) + "," + round(y(f.fake_probability));
    }).join(" ") }, chart);
    var points = svg("g", { "class": "timeline__points" }, chart);
    frames.forEach(function (f) {
      var isPeak = f === peak;
      var point = svg("circle", { "class": "timeline__point" + (isPeak ? " is-peak" : "") +
        (f.fake_probability >= r.threshold ? " is-over" : ""), cx: round(x(f.time_s)), cy: round(y(f.fake_probability)),
        r: isPeak ? 6 : 3.5, "data-index": f.index, "data-time": f.time_s }, points);
      svg("title", {}, point).textContent = formatTime(f.time_s) + ": " + formatPercent(f.fake_probability) +
        " fake probability" + (isPeak ? " (peak frame)" : "");
    });
    if (peak) {
      var px = x(peak.time_s), py = y(peak.fake_probability);
      var anchor = px > width * 0.7 ? "end" : px < width * 0.3 ? "start" : "middle";
      var below = py < pad.top + 18;
      var text = svg("text", { "class": "timeline__peak-label", x: round(px), y: round(below ? py + 20 : py - 11),
        "text-anchor": anchor, "aria-hidden": "true" }, chart);
      text.textContent = "peak " + formatPercent(peak.fake_probability);
    }
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () { if (lastVideo) { renderTimeline(lastVideo); } }, 150);
  });

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
        tr.appendChild(cell_(formatThreshold(m.threshold)));
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

  // ---------- regions: wording and boxes ----------
  var KIND_WHERE = { face: " in a face", tile: " in one part of the image", global: " in the image as a whole",
    copy_move: ": two areas of the image are copies of each other" };
  var KIND_NAME = { face: "face", tile: "region", global: "whole view", copy_move: "copied area" };
  var FRAME_WHERE = { face: ", in a face (marked in red on the frame below)",
    tile: ", in one part of the frame (marked in red below)",
    copy_move: ", where two areas of the frame are copies of each other (marked in red below)" };

  // The region that decided the verdict: the highest-scoring one (the image score is their maximum).
  function decidingRegion(regions) {
    var best = null;
    regions.forEach(function (region) {
      if (!best || region.fake_probability > best.fake_probability) { best = region; }
    });
    return best;
  }

  function whereText(region) {
    if (!region) { return ""; }
    return KIND_WHERE[region.kind] + (region.kind === "global" ? "" : " (marked in red)");
  }

  function plural(count, word) { return count + " " + word + (count === 1 ? "" : "s"); }

  // One line on what the model looked at, so that "Real" does not read as "proven authentic".
  function scopeText(r, regions, verdict) {
    var caveat = verdict === "fake"
      ? "it was trained on synthetic edits: treat this as a hint, not proof."
      : "it was trained on synthetic edits, so it can miss real-world fakes.";
    var what = " for pasted, spliced, retouched or blended regions; " + caveat;
    if (!regions.length) { return "It checked one downscaled view of the image (fast mode)" + what; }
    var faces = regions.filter(function (region) { return region.kind === "face"; }).length;
    var tiles = regions.filter(function (region) { return region.kind === "tile"; }).length;
    var shrunk = (r.notes || []).some(function (note) { return note.indexOf(" analysed at ") >= 0; });
    var frame = !tiles ? "the whole frame as one view"
      : "the whole frame at " + (shrunk ? "reduced" : "full") + " resolution";
    return (faces ? "It checked " + plural(faces, "face") + " and " + frame : "It found no face and checked " + frame) +
      what;
  }

  function renderNotes(notes) {
    var list = $("verdict-notes");
    list.textContent = "";
    notes.forEach(function (note) {
      var item = document.createElement("li");
      item.textContent = "Note: " + note + ".";
      list.appendChild(item);
    });
    list.hidden = !notes.length;
  }

  // Faces always (with their score); of the other regions only the most suspicious: those at or above the
  // verdict threshold, at most three (none when the verdict is Real: every region is below it then). The
  // deciding region is always marked when the verdict is Fake, a face included; a copy-move that decides
  // is marked with both of its areas (the copy cannot be told from its source).
  function suspiciousRegions(r, regions, deciding, verdict) {
    var suspects = regions
      .filter(function (region) {
        return region.kind !== "face" && region.kind !== "copy_move" && region.fake_probability >= r.threshold;
      })
      .sort(function (a, b) { return b.fake_probability - a.fake_probability; })
      .slice(0, 3);
    if (verdict === "fake" && deciding && deciding.kind === "copy_move") {
      var copies = regions.filter(function (region) { return region.kind === "copy_move"; });
      return copies.concat(suspects.slice(0, 1));
    }
    if (verdict === "fake" && deciding && deciding.kind !== "face" && suspects.indexOf(deciding) < 0) {
      suspects = [deciding].concat(suspects.slice(0, 2));
    }
    return suspects;
  }

  // Boxes are in pixels of a picture of width x height (the image, or the video for its peak frame).
  function renderRegions(r, regions, deciding, verdict, width, height) {
    var layer = $("viewer-regions");
    layer.textContent = "";
    var faces = regions.filter(function (region) { return region.kind === "face"; });
    var suspects = suspiciousRegions(r, regions, deciding, verdict);
    var drawn = 0;
    if (width > 0 && height > 0) {
      // Larger boxes first, so that a small box inside a large one stays on top (and clickable for its title).
      faces.concat(suspects)
        .sort(function (a, b) { return area(b) - area(a); })
        .forEach(function (region) {
          var suspicious = region.kind !== "face" ||
            (verdict === "fake" && region === deciding) || region.fake_probability >= r.threshold;
          layer.appendChild(regionBox(region, width, height, suspicious, faces.length > 6));
          drawn += 1;
        });
    }
    $("regions-switch").hidden = !drawn;
    $("regions-legend").hidden = !drawn;
    $("regions-legend").querySelector(".legend__item--face").hidden = !faces.length;
    $("regions-legend").querySelector(".legend__item--suspect").hidden = !suspects.length &&
      !(verdict === "fake" && deciding && deciding.kind === "face");
  }

  function area(region) { return (region.box[2] - region.box[0]) * (region.box[3] - region.box[1]); }

  // A box in percentages of the original image, so that it follows the picture at any displayed size.
  function regionBox(region, width, height, suspicious, crowded) {
    var clamp = function (value, max) { return Math.min(Math.max(value, 0), max); };
    var x0 = clamp(region.box[0], width), y0 = clamp(region.box[1], height);
    var x1 = clamp(region.box[2], width), y1 = clamp(region.box[3], height);
    var box = document.createElement("div");
    box.className = "region region--" + region.kind + (suspicious ? " is-suspicious" : "");
    box.setAttribute("role", "listitem");
    box.dataset.kind = region.kind;
    box.dataset.box = [x0, y0, x1, y1].join(",");
    box.style.left = (100 * x0 / width) + "%";
    box.style.top = (100 * y0 / height) + "%";
    box.style.width = (100 * (x1 - x0) / width) + "%";
    box.style.height = (100 * (y1 - y0) / height) + "%";
    var text = KIND_NAME[region.kind] + " " + formatPercent(region.fake_probability);
    box.title = text + " fake probability";
    var label = document.createElement("span");
    label.className = "region__label";
    // Many faces: just the score, so the labels do not bury the picture (the title keeps the full text).
    label.textContent = crowded && region.kind === "face" ? formatPercent(region.fake_probability) : text;
    var visible = document.createElement("span");
    visible.className = "visually-hidden";
    visible.textContent = " fake probability";
    label.appendChild(visible);
    // Labels sit inside the box's top edge; a box near the right edge anchors its label to the right.
    if (x0 / width > 0.6) { box.classList.add("region--label-right"); }
    box.appendChild(label);
    return box;
  }

  function applyRegionsControl() {
    $("viewer").classList.toggle("is-regions-off", !$("regions-toggle").checked);
  }
  $("regions-toggle").addEventListener("change", applyRegionsControl);

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
