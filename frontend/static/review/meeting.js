// Meeting mode: step through the cases from the keyboard (N or ArrowRight next, P or ArrowLeft previous)
// and show or hide the AI's marks (A). Keys are ignored while someone types a learning point.
const room = document.getElementById("meeting-case");

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target instanceof HTMLInputElement) return !["radio", "checkbox", "button", "submit"].includes(target.type);
  return target.isContentEditable || ["SELECT", "TEXTAREA"].includes(target.tagName);
}

function go(href) {
  if (href) window.location.assign(href);
}

if (room) {
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return;
    const key = event.key.toLowerCase();
    if (key === "n" || event.key === "ArrowRight") go(room.dataset.next);
    else if (key === "p" || event.key === "ArrowLeft") go(room.dataset.prev);
    else if (key === "a") room.classList.toggle("marks-hidden");
    else return;
    event.preventDefault();
  });
}
