// Keyboard navigation of the worklist: arrows or j/k move, Enter opens, "/" jumps to the search box.
// The selection is kept by study UID, so the table's self-refresh (htmx) does not lose it.

const body = document.getElementById("worklist-rows");
let selectedUid = null;

function rows() {
  return Array.from(body.querySelectorAll("tr[data-study-uid]"));
}

function select(row) {
  for (const other of rows()) {
    other.classList.toggle("is-selected", other === row);
    other.setAttribute("aria-selected", String(other === row));
  }
  if (row) {
    selectedUid = row.dataset.studyUid;
    row.scrollIntoView({ block: "nearest" });
  }
}

function move(step) {
  const all = rows();
  if (all.length === 0) return;
  const index = all.findIndex((row) => row.dataset.studyUid === selectedUid);
  const next = index < 0 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
  select(all[next]);
}

function isTyping(target) {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName));
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "/" && !isTyping(event.target)) {
    event.preventDefault();
    document.querySelector("[data-testid=search]").focus();
    return;
  }
  if (isTyping(event.target)) {
    if (event.key === "Escape" || event.key === "ArrowDown") event.target.blur();
    if (event.key !== "ArrowDown") return;
  }
  if (event.key === "ArrowDown" || event.key === "j") move(1);
  else if (event.key === "ArrowUp" || event.key === "k") move(-1);
  else if (event.key === "Enter") {
    const row = rows().find((candidate) => candidate.dataset.studyUid === selectedUid);
    if (row) window.location.assign(row.dataset.href);
  } else return;
  event.preventDefault();
});

body.addEventListener("click", (event) => {
  const row = event.target instanceof Element ? event.target.closest("tr[data-study-uid]") : null;
  if (row) select(row);
});

// After each refresh or filter swap, mark the same study again.
document.body.addEventListener("htmx:afterSwap", () => {
  const row = rows().find((candidate) => candidate.dataset.studyUid === selectedUid);
  if (row) select(row);
});

// A changed filter starts again at the first page; the hidden page field keeps the page for the
// self-refresh. Capture phase: before htmx reads the form.
const filters = document.getElementById("worklist-filters");
for (const type of ["input", "change"]) {
  filters.addEventListener(type, (event) => {
    if (event.target instanceof HTMLElement && event.target.getAttribute("name") !== "page") {
      filters.elements.namedItem("page").value = "1";
    }
  }, true);
}
