// The recording page's waveform: both channels drawn from the peaks embedded in the page
// (agent on top, far party below), the played part shaded, click or arrow keys to seek.
// Plain JavaScript, no framework: the page works without it, the audio element stays.
(function () {
  "use strict";

  const audio = document.getElementById("player");
  const canvas = document.getElementById("waveform");
  const peaksNode = document.getElementById("peaks-data");
  if (!audio) {
    return;
  }
  const peaks = peaksNode ? JSON.parse(peaksNode.textContent) : null;
  const COLOURS = ["#1f6feb", "#c2410c"];
  const PLAYED = "rgba(31, 111, 235, 0.12)";
  const KEY_STEP_SECONDS = 5;

  function duration() {
    if (Number.isFinite(audio.duration) && audio.duration > 0) {
      return audio.duration;
    }
    if (peaks && peaks.sample_rate) {
      return peaks.frames / peaks.sample_rate;
    }
    return parseFloat(canvas ? canvas.dataset.duration : "0") || 0;
  }

  function seekTo(seconds) {
    const length = duration();
    audio.currentTime = Math.min(Math.max(seconds, 0), length || seconds);
    draw();
  }

  // The loudest sample of the whole file fills its lane: quiet calls stay visible.
  function loudest() {
    let top = 1;
    for (const channel of peaks.channels) {
      for (let i = 0; i < channel.min.length; i += 1) {
        top = Math.max(top, -channel.min[i], channel.max[i]);
      }
    }
    return top;
  }

  const scale = peaks ? loudest() : 1;

  function drawLane(context, channel, colour, top, height, width) {
    const middle = top + height / 2;
    const half = (height / 2 - 2) / scale;
    const buckets = channel.min.length;
    context.fillStyle = colour;
    for (let x = 0; x < width; x += 1) {
      const first = Math.floor((x * buckets) / width);
      const last = Math.max(first + 1, Math.floor(((x + 1) * buckets) / width));
      let low = 0;
      let high = 0;
      for (let i = first; i < last && i < buckets; i += 1) {
        low = Math.min(low, channel.min[i]);
        high = Math.max(high, channel.max[i]);
      }
      const y = middle - high * half;
      context.fillRect(x, y, 1, Math.max(1, (high - low) * half));
    }
  }

  function draw() {
    if (!canvas || !peaks) {
      return;
    }
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    const lanes = peaks.channels.length || 1;
    const laneHeight = height / lanes;
    const length = duration();
    const played = length > 0 ? Math.min(audio.currentTime / length, 1) : 0;
    context.fillStyle = PLAYED;
    context.fillRect(0, 0, played * width, height);
    peaks.channels.forEach(function (channel, index) {
      drawLane(context, channel, COLOURS[index % COLOURS.length], index * laneHeight, laneHeight, width);
    });
    context.fillStyle = "#d9dde3";
    for (let lane = 1; lane < lanes; lane += 1) {
      context.fillRect(0, Math.round(lane * laneHeight), width, 1);
    }
    context.fillStyle = "#1d2430";
    context.fillRect(Math.round(played * width), 0, Math.max(1, ratio), height);
    canvas.setAttribute("aria-valuenow", String(Math.round(audio.currentTime)));
  }

  if (canvas) {
    canvas.addEventListener("click", function (event) {
      const box = canvas.getBoundingClientRect();
      const fraction = Math.min(Math.max((event.clientX - box.left) / box.width, 0), 1);
      seekTo(fraction * duration());
    });
    canvas.addEventListener("keydown", function (event) {
      if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
        const step = event.key === "ArrowRight" ? KEY_STEP_SECONDS : -KEY_STEP_SECONDS;
        seekTo(audio.currentTime + step);
        event.preventDefault();
      } else if (event.key === " ") {
        if (audio.paused) {
          audio.play();
        } else {
          audio.pause();
        }
        event.preventDefault();
      }
    });
  }
  document.querySelectorAll("[data-seek]").forEach(function (button) {
    button.addEventListener("click", function () {
      seekTo(parseFloat(button.dataset.seek));
    });
  });
  // A new note is at the player's position, until its position is typed by hand.
  const notePosition = document.getElementById("note-position");
  if (notePosition) {
    notePosition.addEventListener("input", function () {
      notePosition.dataset.typed = "1";
    });
    ["timeupdate", "seeked"].forEach(function (name) {
      audio.addEventListener(name, function () {
        if (!notePosition.dataset.typed) {
          notePosition.value = audio.currentTime.toFixed(1);
        }
      });
    });
  }
  ["timeupdate", "loadedmetadata", "seeked", "play", "pause"].forEach(function (name) {
    audio.addEventListener(name, draw);
  });
  window.addEventListener("resize", draw);
  draw();
})();
