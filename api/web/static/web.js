// The workspace's only script: a live progress bar while a campaign builds, and the template
// editor's highlighting. Without it the pages still work: the campaign page refreshes itself
// (a <noscript> meta refresh) and the editor is a plain textarea under the highlighted source.

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
