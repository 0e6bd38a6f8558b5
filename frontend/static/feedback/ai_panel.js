// The AI panel beside the viewport: puts the results' overlays on the image and lets the reader show or
// hide each finding (or all, key A), change the heatmap opacity, and jump to a finding's image.
// Every text on the panel was escaped by the server; this script only reads data attributes and JSON.

const state = { viewport: null, overlays: [] };

function panel() {
  return document.getElementById("ai-panel-body");
}

function showAll() {
  const box = document.getElementById("ai-show-all");
  return box ? box.checked : true;
}

function opacity() {
  const slider = document.getElementById("ai-opacity");
  return slider ? Number(slider.value) / 100 : 0.5;
}

function hiddenOverlayIds() {
  const hidden = new Set();
  for (const item of document.querySelectorAll("#ai-panel-body li.finding")) {
    const toggle = item.querySelector(".finding-toggle");
    if (toggle && !toggle.checked) for (const id of overlayIds(item)) hidden.add(id);
  }
  return hidden;
}

function overlayIds(item) {
  return (item.dataset.overlayIds || "").split(" ").filter(Boolean);
}

function applyVisibility() {
  if (!state.viewport) return;
  const hidden = hiddenOverlayIds();
  const all = showAll();
  for (const overlay of state.overlays) state.viewport.setOverlayVisible(overlay.id, all && !hidden.has(overlay.id));
}

function readOverlays() {
  const body = panel();
  state.overlays = body && body.dataset.overlays ? JSON.parse(body.dataset.overlays) : [];
  if (!state.viewport) return;
  state.viewport.setOverlays(state.overlays);
  state.viewport.setOverlayOpacity(opacity());
  applyVisibility();
}

function attach(viewport) {
  if (state.viewport === viewport) return;
  state.viewport = viewport;
  readOverlays();
}

function jumpTo(item) {
  for (const other of document.querySelectorAll("#ai-panel-body li.finding.is-current")) other.classList.remove("is-current");
  item.classList.add("is-current");
  if (!state.viewport || !item.dataset.instanceUid) return;
  state.viewport.goTo(item.dataset.instanceUid, Number(item.dataset.frame || "1"));
  const ids = overlayIds(item);
  state.viewport.highlight(ids.find((id) => id.startsWith("box")) || ids[0] || null);
}

function isTyping(target) {
  return target instanceof HTMLElement && ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName) && target.type !== "checkbox" && target.type !== "range";
}

document.addEventListener("openaim:viewport-ready", (event) => attach(event.detail.viewport));
if (document.openaimViewport) attach(document.openaimViewport);

document.body.addEventListener("htmx:afterSwap", () => {
  if (panel()) readOverlays();
});

document.addEventListener("change", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLInputElement) || !panel() || !panel().contains(target)) return;
  if (target.id === "ai-show-all" || target.classList.contains("finding-toggle")) applyVisibility();
});

document.addEventListener("input", (event) => {
  if (event.target instanceof HTMLInputElement && event.target.id === "ai-opacity" && state.viewport) {
    state.viewport.setOverlayOpacity(opacity());
  }
});

document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("#ai-panel-body .finding-jump") : null;
  if (button) jumpTo(button.closest("li.finding"));
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "a" && event.key !== "A") return;
  if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return;
  const box = document.getElementById("ai-show-all");
  if (!box) return;
  box.checked = !box.checked;
  applyVisibility();
  event.preventDefault();
});
