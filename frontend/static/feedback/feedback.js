// Second-reader feedback from the AI panel: a verdict per finding (two clicks, or one key on the chosen
// finding: Y agree, N disagree, U unsure), a reason and comment, a missed finding drawn as a box (M), the
// study's triage answer and review flag; Done (D) stores it as DICOM, marks the study read and offers the next
// unread study in worklist order (J opens it). Nothing is lost: every save goes through an outbox kept in
// localStorage and is sent again until the server has it; the client-made id makes a resend harmless.

const OUTBOX_KEY = "openaim-feedback-outbox";
const RETRY_MS = [1000, 2000, 4000, 8000, 15000];
const openedAt = performance.now();
let attempt = 0;
let timer = null;
let sending = false;
let statusAnchor = null; // the control whose save the message is about: the message is shown beside it

function panel() {
  return document.getElementById("ai-panel-body");
}

function csrfToken() {
  const holder = document.body.getAttribute("hx-headers");
  return holder ? JSON.parse(holder)["X-CSRF-Token"] : "";
}

function outbox() {
  try {
    return JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]");
  } catch {
    return [];
  }
}

function keep(items) {
  localStorage.setItem(OUTBOX_KEY, JSON.stringify(items));
}

function showStatus(text, state) {
  const status = document.querySelector("[data-testid=save-status]");
  if (!status) return;
  placeStatus(status);
  status.textContent = text;
  status.dataset.state = state;
}

/** The message goes right after the group of the control that caused it (a finding's verdict buttons, the
 * triage answer, the review flag, Done), so the reader sees it where they are looking. */
function placeStatus(status) {
  if (!statusAnchor || !statusAnchor.isConnected || !panel() || !panel().contains(statusAnchor)) return;
  const group = statusAnchor.closest(".verdict, .triage-right, .study-feedback > label") || statusAnchor;
  if (group.nextElementSibling !== status) group.after(status);
}

/** Queue one save and try to send it at once; ``from`` is the control that asked for it. */
function save(studyUid, body, from = null) {
  if (from) statusAnchor = from;
  const item = { studyUid, body: { client_id: crypto.randomUUID(), seconds_on_study: secondsOnStudy(), ...body } };
  keep([...outbox(), item]);
  flush();
  return item.body.client_id;
}

function secondsOnStudy() {
  return Math.round((performance.now() - openedAt) / 100) / 10;
}

async function flush() {
  if (sending) return;
  sending = true;
  clearTimeout(timer);
  try {
    for (let items = outbox(); items.length > 0; items = outbox()) {
      const [item] = items;
      showStatus(`Saving… (${items.length} to send)`, "saving");
      const answer = await send(item);
      if (answer === "retry") {
        const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
        attempt += 1;
        showStatus(`Not saved yet: the server did not answer. Retrying in ${delay / 1000} s (${items.length} waiting).`, "retrying");
        timer = setTimeout(flush, delay);
        return;
      }
      attempt = 0;
      keep(outbox().filter((other) => other.body.client_id !== item.body.client_id));
      if (answer !== "ok") showStatus(`Not saved: ${answer}`, "refused");
      else showStatus("Saved.", "saved");
    }
  } finally {
    sending = false;
  }
}

/** "ok", "retry" (network or server trouble: keep it), or the reason it was refused (drop it). */
async function send(item) {
  let response;
  try {
    response = await fetch(`/api/studies/${item.studyUid}/feedback`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(item.body),
      credentials: "same-origin",
    });
  } catch {
    return "retry";
  }
  if (response.ok) return "ok";
  if (response.status >= 500 || response.status === 409 || response.status === 429) return "retry";
  const detail = await response.json().catch(() => ({}));
  return typeof detail.detail === "string" ? detail.detail : `the server refused it (${response.status})`;
}

function findingBody(item, verdict) {
  const reason = item.querySelector(".reason");
  const comment = item.querySelector(".comment");
  return {
    kind: "finding",
    result_id: item.dataset.resultId,
    finding_id: item.dataset.findingId,
    verdict,
    reason: verdict === "disagree" && reason && reason.value ? reason.value : null,
    comment: comment && comment.value.trim() ? comment.value.trim() : null,
  };
}

function choose(item, verdict) {
  item.dataset.verdict = verdict;
  for (const button of item.querySelectorAll(".verdict-button")) {
    const chosen = button.dataset.verdict === verdict;
    button.classList.toggle("is-chosen", chosen);
    button.setAttribute("aria-pressed", String(chosen));
  }
  const reason = item.querySelector(".reason");
  if (reason) reason.hidden = verdict !== "disagree";
  save(panel().dataset.studyUid, findingBody(item, verdict), item.querySelector(".verdict"));
}

function studyBody(overrides) {
  const chosen = document.querySelector("#ai-panel-body .triage-button.is-chosen");
  const flagged = document.querySelector("#ai-panel-body .review-requested");
  return {
    kind: "study",
    triage_correct: chosen ? chosen.dataset.triageCorrect === "true" : null,
    review_requested: flagged ? flagged.checked : false,
    ...overrides,
  };
}

// ---- a missed finding: the next drag on the image draws its box ----

function markMissed() {
  const viewport = document.openaimViewport;
  if (!viewport || !viewport.current) return;
  statusAnchor = panel().querySelector(".mark-missed") || statusAnchor;
  const canvas = viewport.canvas;
  showStatus("Draw a box around the missed finding on the image (Esc cancels).", "marking");
  canvas.classList.add("is-marking");
  const toImage = (event) => {
    const rect = canvas.getBoundingClientRect();
    const scale = canvas.width / rect.width;
    return [
      ((event.clientX - rect.left) * scale - viewport.view.x) / viewport.view.zoom,
      ((event.clientY - rect.top) * scale - viewport.view.y) / viewport.view.zoom,
    ];
  };
  let start = null;
  const base = viewport.overlays.slice();
  const onDown = (event) => {
    event.stopImmediatePropagation();
    event.preventDefault();
    start = toImage(event);
    canvas.setPointerCapture(event.pointerId);
  };
  const onMove = (event) => {
    if (!start) return;
    event.stopImmediatePropagation();
    viewport.setOverlays([...base, draft(viewport, start, toImage(event))]);
  };
  const onUp = (event) => {
    if (!start) return;
    event.stopImmediatePropagation();
    const box = draft(viewport, start, toImage(event)).rect;
    finish();
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return showStatus("The box was too small; press M to try again.", "refused");
    const slice = viewport.current;
    const missed = { instance_uid: slice.image.instance_uid, frame: slice.frame, box: box.map((v) => Math.round(v * 10) / 10) };
    const comment = document.querySelector("#ai-panel-body .comment-missed");
    save(panel().dataset.studyUid, { kind: "missed", missed_id: crypto.randomUUID(), mark: missed, comment: comment && comment.value.trim() ? comment.value.trim() : null });
    viewport.setOverlays([...base, { ...draft(viewport, start, toImage(event)), id: `missed-${Date.now()}`, label: "missed (yours)" }]);
  };
  const onKey = (event) => {
    if (event.key === "Escape") {
      finish();
      viewport.setOverlays(base);
      showStatus("Marking cancelled.", "saved");
    }
  };
  function finish() {
    canvas.classList.remove("is-marking");
    canvas.removeEventListener("pointerdown", onDown, true);
    canvas.removeEventListener("pointermove", onMove, true);
    canvas.removeEventListener("pointerup", onUp, true);
    document.removeEventListener("keydown", onKey, true);
  }
  canvas.addEventListener("pointerdown", onDown, true);
  canvas.addEventListener("pointermove", onMove, true);
  canvas.addEventListener("pointerup", onUp, true);
  document.addEventListener("keydown", onKey, true);
}

function draft(viewport, from, to) {
  const slice = viewport.current;
  const rect = [Math.min(from[0], to[0]), Math.min(from[1], to[1]), Math.max(from[0], to[0]), Math.max(from[1], to[1])];
  return { id: "missed-draft", kind: "box", instance_uid: slice.image.instance_uid, frame: slice.frame, rect, label: "missed", colour: "#4dd0e1" };
}

async function publish() {
  const studyUid = panel().dataset.studyUid;
  statusAnchor = panel().querySelector(".feedback-done") || statusAnchor;
  if (outbox().length > 0) return showStatus("Waiting for your feedback to be saved first; press Done again in a moment.", "retrying");
  let response;
  try {
    response = await fetch(`/api/studies/${studyUid}/feedback/sr`, { method: "POST", headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" });
  } catch {
    return showStatus("Could not reach the server to store the DICOM record; your feedback itself is saved. Try Done again.", "retrying");
  }
  if (response.ok) showStatus("Saved, and stored in the archive as a DICOM SR.", "published");
  else {
    const detail = await response.json().catch(() => ({}));
    showStatus(`The DICOM record was not stored: ${typeof detail.detail === "string" ? detail.detail : response.status}`, "refused");
  }
  // The feedback itself is saved either way (the message says whether the archive has its record): the
  // reader is done with the study.
  await finishStudy(studyUid);
}

/** The study is read: ask for the next unread one and offer it beside Done. */
async function finishStudy(studyUid) {
  let response;
  try {
    response = await fetch(`/api/studies/${studyUid}/done`, { method: "POST", headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" });
  } catch {
    return;
  }
  if (!response.ok) return;
  const answer = await response.json().catch(() => ({}));
  offerNext(answer.next || null);
}

function offerNext(next) {
  const holder = panel() && panel().querySelector(".next-study");
  if (!holder) return;
  const link = holder.querySelector(".next-study-link");
  const what = holder.querySelector(".next-study-what");
  if (next) {
    link.href = next.url;
    const facts = [next.patient_name, next.study_date, next.description, next.accession ? `Acc. ${next.accession}` : ""];
    what.textContent = facts.filter(Boolean).join(" · ") + (next.triage && next.triage !== "none" ? ` (${next.triage})` : "");
  } else {
    link.href = "/worklist";
    link.firstChild.textContent = "Back to the worklist ";
    what.textContent = "Every study in the worklist is read.";
  }
  holder.hidden = false;
  link.focus();
}

// ---- wiring ----

document.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target : null;
  if (!target || !panel() || !panel().contains(target)) return;
  const verdict = target.closest(".verdict-button");
  if (verdict) return choose(verdict.closest("li.finding"), verdict.dataset.verdict);
  const triage = target.closest(".triage-button");
  if (triage) {
    for (const other of panel().querySelectorAll(".triage-button")) other.classList.toggle("is-chosen", other === triage);
    return save(panel().dataset.studyUid, studyBody({}), triage);
  }
  if (target.closest(".mark-missed")) return markMissed();
  if (target.closest(".feedback-done")) return publish();
});

document.addEventListener("change", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLElement) || !panel() || !panel().contains(target)) return;
  const item = target.closest("li.finding");
  if (item && (target.classList.contains("reason") || target.classList.contains("comment")) && item.dataset.verdict) {
    save(panel().dataset.studyUid, findingBody(item, item.dataset.verdict), target);
  } else if (target.classList.contains("review-requested")) {
    save(panel().dataset.studyUid, studyBody({}), target);
  }
});

const KEYS = { y: "agree", n: "disagree", u: "unsure" };

/** J: the next unread study, once Done has offered it (J moves down the worklist too). */
function openNext() {
  const holder = panel() && panel().querySelector(".next-study");
  if (!holder || holder.hidden) return false;
  window.location.assign(holder.querySelector(".next-study-link").href);
  return true;
}

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || !panel()) return;
  const target = event.target;
  if (target instanceof HTMLElement && (["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName) && target.type !== "checkbox")) return;
  const key = event.key.toLowerCase();
  if (key === "m" && panel().querySelector(".mark-missed")) {
    markMissed();
    event.preventDefault();
    return;
  }
  if (key === "d" && panel().querySelector(".feedback-done")) {
    publish();
    event.preventDefault();
    return;
  }
  if (key === "j" && openNext()) {
    event.preventDefault();
    return;
  }
  const current = panel().querySelector("li.finding.is-current") || panel().querySelector("li.finding");
  if (KEYS[key] && current && current.querySelector(".verdict-button")) {
    choose(current, KEYS[key]);
    event.preventDefault();
  }
});

window.addEventListener("online", flush);
flush(); // anything left from a previous page (a save the server never confirmed) goes first
