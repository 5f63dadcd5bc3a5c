// tinyhistory study: the raters' page. The server picks pairs and keeps the votes; this page only shows a pair,
// keeps the two videos on one clock, and sends one vote at a time (the next pair comes back once the vote is on
// disk, so a vote the page has not confirmed is never assumed saved).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "tinyhistory-study-rater";
const left = $("left");
const right = $("right");
let rater = localStorage.getItem(KEY) || "";
let current = null; // the pair on screen: {token, left, right, storyboard, duration}
let busy = false;
let playing = true;

async function api(path, body) {
  let response;
  try {
    response = await fetch(path, body === undefined ? {} : {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
    });
  } catch (error) {
    throw new Error("the study server does not answer (stopped or restarting?)");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function show(section) {
  if (section !== "login" && document.activeElement instanceof HTMLElement) document.activeElement.blur();
  for (const id of ["login", "rate", "finished"]) $(id).hidden = id !== section;
  $("who").hidden = section === "login";
}

function renderStoryboard(story) {
  const table = document.createElement("table");
  for (const shot of story.shots) {
    const row = table.insertRow();
    row.dataset.start = shot.start;
    row.dataset.end = shot.end;
    const time = row.insertCell();
    time.className = "time";
    time.textContent = `${shot.start}–${shot.end} s`;
    row.insertCell().textContent = shot.prompt; // text, never HTML
  }
  $("storyboard").replaceChildren(table);
}

function render(data) {
  $("rater-name").textContent = data.rater;
  $("progress").textContent = `${data.done} of ${data.total} rated`;
  $("progress").dataset.done = data.done;
  $("progress").dataset.total = data.total;
  if (data.note) status(data.note);
  if (!data.pair) {
    current = null;
    left.pause();
    right.pause();
    left.removeAttribute("src");
    right.removeAttribute("src");
    show("finished");
    return;
  }
  const fresh = !current || current.token !== data.pair.token;
  current = data.pair;
  $("rate").dataset.token = current.token;
  show("rate");
  if (!fresh) return;
  renderStoryboard(current.storyboard);
  for (const box of document.querySelectorAll("#reasons input")) box.checked = false;
  loadVideos(current);
}

function loadVideos(pair) {
  const token = pair.token;
  let ready = 0;
  const start = () => {
    if (++ready < 2 || !current || current.token !== token) return;
    left.currentTime = 0;
    right.currentTime = 0;
    if (playing) playBoth();
  };
  for (const [video, src] of [[left, pair.left], [right, pair.right]]) {
    video.addEventListener("canplay", start, {once: true});
    video.src = src;
    video.load();
  }
}

function playBoth() {
  playing = true;
  $("play").firstChild.textContent = "Pause ";
  left.play().catch(() => {});
  right.play().catch(() => {});
}

function pauseBoth() {
  playing = false;
  $("play").firstChild.textContent = "Play ";
  left.pause();
  right.pause();
}

function restart() {
  left.currentTime = 0;
  right.currentTime = 0;
  if (playing) playBoth();
}

// One clock: the right video follows the left one; a stall in either pauses both until both can play.
setInterval(() => {
  if (!current || !playing) return;
  if (Math.abs(right.currentTime - left.currentTime) > 0.1) right.currentTime = left.currentTime;
  if ((left.paused || right.paused) && left.readyState >= 3 && right.readyState >= 3) playBoth();
}, 200);
left.addEventListener("waiting", () => right.pause());
right.addEventListener("waiting", () => left.pause());
left.addEventListener("timeupdate", () => {
  for (const row of document.querySelectorAll("#storyboard tr")) {
    const t = left.currentTime;
    row.classList.toggle("now", t >= Number(row.dataset.start) && t < Number(row.dataset.end));
  }
});

async function start(name) {
  status("");
  try {
    const data = await api(`/api/next?rater=${encodeURIComponent(name)}`);
    rater = data.rater;
    localStorage.setItem(KEY, rater);
    render(data);
  } catch (error) {
    status(`Could not start: ${error.message}`, true);
    show("login");
  }
}

async function vote(choice) {
  if (busy || !current) return;
  busy = true;
  for (const button of document.querySelectorAll(".votes button")) button.disabled = true;
  status("Saving…");
  const reasons = [...document.querySelectorAll("#reasons input:checked")].map((box) => box.value);
  try {
    const data = await api("/api/vote", {rater, token: current.token, choice, reasons});
    if (!data.note) status(`Saved (${choice.replace("_", " ")}).`);
    render(data);
  } catch (error) {
    status(`Not saved: ${error.message}. Your vote was not counted; vote again.`, true);
  } finally {
    busy = false;
    for (const button of document.querySelectorAll(".votes button")) button.disabled = false;
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("rater-input").value.trim();
  if (name) start(name);
});
$("switch-rater").addEventListener("click", () => {
  localStorage.removeItem(KEY);
  current = null;
  pauseBoth();
  playing = true;
  $("rater-input").value = "";
  show("login");
});
for (const button of document.querySelectorAll(".votes button")) {
  button.addEventListener("click", () => {
    button.blur(); // a later Space must pause the videos, not press this button again
    vote(button.dataset.choice);
  });
}
$("play").addEventListener("click", () => { $("play").blur(); playing ? pauseBoth() : playBoth(); });
$("restart").addEventListener("click", () => { $("restart").blur(); restart(); });

const KEYS = {
  ArrowLeft: "left", f: "left", F: "left",
  ArrowRight: "right", j: "right", J: "right",
  ArrowDown: "tie", t: "tie", T: "tie",
  b: "both_bad", B: "both_bad",
};
document.addEventListener("keydown", (event) => {
  if ($("rate").hidden || event.ctrlKey || event.altKey || event.metaKey) return;
  if (event.target instanceof HTMLInputElement && event.target.type === "text") return;
  if (event.key in KEYS) {
    event.preventDefault();
    vote(KEYS[event.key]);
  } else if (event.key === " ") {
    event.preventDefault();
    playing ? pauseBoth() : playBoth();
  } else if (event.key === "r" || event.key === "R") {
    event.preventDefault();
    restart();
  } else if (/^[1-5]$/.test(event.key)) {
    event.preventDefault();
    const box = document.querySelectorAll("#reasons input")[Number(event.key) - 1];
    box.checked = !box.checked;
  }
});

if (rater) start(rater); else show("login");
