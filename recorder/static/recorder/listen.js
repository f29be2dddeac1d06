// Live listening (docs/playback.md): segments of the call's audio, each a small stereo WAV
// (agent left, far party right), asked for one after the other and played back to back
// through Web Audio. window.qmsLive counts what the page played; with window.qmsLive.keep
// set (the browser tests) it keeps the samples too.
(function () {
  "use strict";
  const form = document.getElementById("listen");
  if (!form) return;
  const startButton = document.getElementById("listen-start");
  const stopButton = document.getElementById("listen-stop");
  const state = document.getElementById("listen-state");
  const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  // Audio is scheduled this far ahead of now when playback starts or falls behind.
  const LEAD_SECONDS = 0.5;
  const live = { keep: false, listening: false, segments: 0, frames: 0, rate: 0, left: [], right: [], ended: "" };
  window.qmsLive = live;
  let context = null;
  let listen = null;
  let playAt = 0;

  function say(text) { state.textContent = text; }

  async function post(url) {
    return fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": token } });
  }

  async function start(event) {
    event.preventDefault();
    context = context || new AudioContext();
    await context.resume();
    const answer = await post(form.dataset.start);
    const body = await answer.json();
    if (!answer.ok) { say(body.detail || "Live listening could not start."); return; }
    listen = body;
    live.listening = true;
    startButton.hidden = true;
    stopButton.hidden = false;
    say("Listening: waiting for the call's audio…");
    fetchNext("");
  }

  async function fetchNext(after) {
    if (!listen) return;
    let answer;
    try {
      answer = await fetch(listen.segments + "?after=" + encodeURIComponent(after), { credentials: "same-origin" });
    } catch (error) {
      say("The connection was lost; trying again…");
      setTimeout(() => fetchNext(after), 1000);
      return;
    }
    if (!answer.ok && answer.status !== 204) { finish("Listening ended: the server refused (" + answer.status + ")."); return; }
    const next = answer.headers.get("X-QMS-After") || after;
    const how = answer.headers.get("X-QMS-Live");
    if (answer.status === 200) await play(await answer.arrayBuffer());
    if (how === "live") { fetchNext(next); return; }
    const why = answer.headers.get("X-QMS-Why");
    finish(how === "ended" ? "The call ended." : "Live audio is unavailable" + (why ? ": " + why : "") + ".");
  }

  async function play(wav) {
    const buffer = await context.decodeAudioData(wav);
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    if (playAt < context.currentTime) playAt = context.currentTime + LEAD_SECONDS;
    source.start(playAt);
    playAt += buffer.duration;
    live.segments += 1;
    live.frames += buffer.length;
    live.rate = buffer.sampleRate;
    if (live.keep) {
      live.left.push(Array.from(buffer.getChannelData(0)));
      live.right.push(Array.from(buffer.getChannelData(buffer.numberOfChannels > 1 ? 1 : 0)));
    }
    say("Listening (" + Math.round(live.frames / buffer.sampleRate) + " s heard).");
  }

  function finish(text) {
    live.listening = false;
    live.ended = text;
    listen = null;
    stopButton.hidden = true;
    say(text);
  }

  async function stop() {
    if (!listen) return;
    const url = listen.stop;
    finish("You stopped listening.");
    await post(url);
  }

  form.addEventListener("submit", start);
  stopButton.addEventListener("click", stop);
  // Leaving the page ends the listen at once (otherwise beat ends it when it lapses).
  window.addEventListener("pagehide", () => {
    if (!listen) return;
    const data = new FormData();
    data.append("csrfmiddlewaretoken", token);
    navigator.sendBeacon(listen.stop, data);
  });
})();
