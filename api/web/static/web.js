// The workspace's only script: a live progress bar while a campaign builds, the template
// editor's highlighting and its live preview. Without it the pages still work: the campaign
// page refreshes itself (a <noscript> meta refresh), the editor is a plain textarea under the
// highlighted source and "save and preview" previews a saved version.

// The editor: the textarea's text, highlighted (Jinja expressions, statements, comments) in a
// mirror drawn behind it, kept in step as the writer types and scrolls. Text is only ever set
// with textContent, so nothing typed becomes markup.
(function () {
  "use strict";
  var box = document.querySelector(".code-editor");
  if (!box) return;
  var area = box.querySelector("textarea");
  var mirror = box.querySelector(".mirror");
  if (!area || !mirror) return;
  var token = /(\{\{[\s\S]*?\}\}|\{%[\s\S]*?%\}|\{#[\s\S]*?#\})/;
  var kinds = { "{{": "tok-expr", "{%": "tok-stmt", "{#": "tok-comment" };
  function paint() {
    var parts = area.value.split(token);
    var frag = document.createDocumentFragment();
    parts.forEach(function (piece, i) {
      if (!piece) return;
      var span = document.createElement("span");
      span.className = i % 2 ? kinds[piece.slice(0, 2)] : "tok-text";
      span.textContent = piece;
      frag.appendChild(span);
    });
    frag.appendChild(document.createTextNode("\n"));  // a trailing newline keeps its height
    mirror.textContent = "";
    mirror.appendChild(frag);
    mirror.scrollTop = area.scrollTop;
  }
  box.classList.add("enhanced");
  area.addEventListener("input", paint);
  area.addEventListener("scroll", function () { mirror.scrollTop = area.scrollTop; });
  paint();
})();

// The editor's live preview: about half a second after the writer stops typing (or changes a
// choice), the unsaved text and the choices go to /web/live-preview, which answers an HTML
// fragment rendered (and escaped) by the server: lint findings at their lines and the scripts.
// Nothing is saved. An answer to an older request than the last one sent is dropped.
(function () {
  "use strict";
  var section = document.getElementById("live");
  var form = document.getElementById("live-form");
  var area = document.getElementById("source");
  if (!section || !form || !area) return;
  var result = document.getElementById("live-result");
  var status = document.getElementById("live-status");
  var speak = document.getElementById("live-speak");
  var sent = 0;
  var timer = null;
  section.hidden = false;
  function update(audio) {
    var body = new URLSearchParams(new FormData(form));
    body.set("source", area.value);
    body.set("audio", audio ? "changed" : "none");
    var mine = ++sent;
    status.textContent = status.dataset.busy;
    fetch(form.dataset.url, {
      method: "POST", credentials: "same-origin", body: body,
      headers: { Accept: "text/html" }
    })
      .then(function (r) {
        if (r.status !== 200 && r.status !== 422) throw new Error(r.status);
        return r.text();
      })
      .then(function (html) {
        if (mine !== sent) return;
        result.innerHTML = html;  // the server's autoescaped fragment
        // say what changed in a word (the lint summary), not the whole preview
        var summary = result.querySelector("#live-lint-summary, .error");
        status.textContent = summary ? summary.textContent : "";
      })
      .catch(function () { if (mine === sent) status.textContent = status.dataset.failed; });
  }
  function later() {
    clearTimeout(timer);
    timer = setTimeout(function () { update(false); }, 500);
  }
  area.addEventListener("input", later);
  form.addEventListener("change", later);
  form.addEventListener("submit", function (e) { e.preventDefault(); update(false); });
  speak.addEventListener("click", function () { clearTimeout(timer); update(true); });
  update(false);
})();

(function () {
  "use strict";
  var box = document.getElementById("build");
  if (!box || box.dataset.status !== "building") return;
  var bar = document.getElementById("build-progress");
  var pct = document.getElementById("build-percent");
  var status = document.getElementById("build-status");
  var counts = document.getElementById("build-counts");
  var words = {};
  var tpl = document.getElementById("status-words");
  if (tpl) {
    tpl.content.querySelectorAll("[data-status]").forEach(function (el) {
      words[el.dataset.status] = el.textContent;
    });
  }
  var countsTpl = document.getElementById("counts-word");
  var countsText = countsTpl ? countsTpl.content.textContent : "";
  function fmt(n) { return Number(n).toLocaleString(); }
  function tick() {
    fetch(box.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (p) {
        bar.value = p.percent;
        bar.textContent = p.percent + "%";
        pct.textContent = p.percent + "%";
        status.textContent = words[p.status] || p.status;
        if (countsText) {
          counts.textContent = countsText.replace("{done}", fmt(p.done))
            .replace("{total}", fmt(p.total)).replace("{failed}", fmt(p.failed));
        }
        if (p.status === "building") {
          setTimeout(tick, 1000);
        } else {
          box.dataset.status = p.status;
          // the build is over: load the page again to show the figures
          setTimeout(function () { window.location.reload(); }, 600);
        }
      })
      .catch(function () { setTimeout(tick, 3000); });
  }
  setTimeout(tick, 500);
})();
