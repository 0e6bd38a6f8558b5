// The study page: one viewport for the shown series; a thumbnail click switches series without a reload.
// Announces the viewport to the AI panel (openaim:viewport-ready, and document.openaimViewport for late
// listeners).
import { Viewport } from "./viewport.js";

const room = document.getElementById("reading-room");
const element = document.getElementById("viewport");

function markCurrent(seriesUid) {
  for (const link of document.querySelectorAll(".series-thumb[data-series-uid]")) {
    link.classList.toggle("current", link.dataset.seriesUid === seriesUid);
  }
}

if (room && element && room.dataset.seriesUid) {
  const viewport = new Viewport(element, room.dataset.studyUid);
  document.openaimViewport = viewport;
  element.focus();
  viewport
    .loadSeries(room.dataset.seriesUid, room.dataset.firstImage ? JSON.parse(room.dataset.firstImage) : null)
    .catch((error) => viewport._status(`Could not load the series: ${error.message}`))
    .finally(() => document.dispatchEvent(new CustomEvent("openaim:viewport-ready", { detail: { viewport } })));

  for (const link of document.querySelectorAll(".series-thumb[data-series-uid]")) {
    link.addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return; // new tab: the link
      event.preventDefault();
      markCurrent(link.dataset.seriesUid);
      history.replaceState(null, "", link.href);
      viewport.loadSeries(link.dataset.seriesUid).catch((error) => viewport._status(`Could not load the series: ${error.message}`));
      element.focus();
    });
  }
}
