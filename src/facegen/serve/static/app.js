// The page: one large face; space, a tap or "New face" shows another. Morph mode walks
// from one face to the next. Faces are addressed by seed, so a link reproduces a face.
// The face is shown at the largest whole multiple of the model's resolution that fits,
// with nearest-neighbour scaling: each model pixel is a k x k block of screen pixels, so the
// page neither hides artefacts (as smooth scaling blurs them) nor invents detail.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const stage = $("stage"), img = $("face"), message = $("message");
  const permalink = $("permalink"), download = $("download"), next = $("next");
  const tag = document.body.dataset.tag; // the model's identity: a new model never shows cached faces
  const resolution = Number(document.body.dataset.resolution) || 0; // the model's side in pixels
  const FRAMES = 16;

  // GAN truncation from the address (/?psi=0.7) goes with every image and link; the server
  // checks it, so a bad value shows the server's one-line error on the page.
  const params = new URLSearchParams(location.search);
  const psiParam = params.has("psi") ? `&psi=${encodeURIComponent(params.get("psi"))}` : "";

  const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];
  const faceUrl = (seed) => `/face.png?seed=${seed}${psiParam}&v=${tag}`;
  const morphUrl = (a, b) => `/morph.gif?from=${a}&to=${b}&frames=${FRAMES}${psiParam}&v=${tag}`;

  // Size the stage to k * resolution device pixels, k the largest whole number that fits the
  // room the stylesheet gives it (var(--stage)). Counted in device pixels so a phone's 2x or
  // a desktop's 1.25x screen still gets whole blocks. A model too large for the room is shrunk
  // smoothly instead (nearest-neighbour shrinking would drop pixels).
  function fit() {
    if (!resolution) return;
    stage.style.width = "";                                   // back to the stylesheet's room, to measure it
    const dpr = window.devicePixelRatio || 1;
    const room = stage.getBoundingClientRect().width * dpr;   // device pixels
    const k = Math.floor(room / resolution);
    const scale = k >= 1 ? k : room / resolution;
    stage.style.width = `${(resolution * scale) / dpr}px`;
    stage.classList.toggle("pixelated", k >= 1);
    stage.dataset.scale = String(scale);
    $("resolution").textContent = `${resolution} × ${resolution} px, shown at ${k >= 1 ? k : scale.toFixed(2)}×`;
  }
  fit();
  window.addEventListener("resize", fit);                     // also fires when zoom changes the pixel ratio

  let state = { mode: "face", seed: null, from: null, to: null };
  let shown = null;   // object URL on screen
  let request = 0;    // newer requests win over slower older ones
  let prefetched = null;

  // Fetch an image; retry politely when the server says it is busy (503 + Retry-After).
  async function fetchImage(url, attempt = 0) {
    const response = await fetch(url);
    if (response.status === 503 && attempt < 10) {
      const wait = 1000 * (Number(response.headers.get("Retry-After")) || 1);
      await new Promise((resolve) => setTimeout(resolve, wait));
      return fetchImage(url, attempt + 1);
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).error; } catch (_) { /* not JSON */ }
      throw new Error(detail);
    }
    return response.blob();
  }

  async function show(url, caption, href, filename) {
    const mine = ++request;
    stage.setAttribute("aria-busy", "true");
    message.hidden = true;
    try {
      const blob = await fetchImage(url);
      if (mine !== request) return;
      const objectUrl = URL.createObjectURL(blob);
      await new Promise((resolve, reject) => {
        img.onload = resolve;
        img.onerror = () => reject(new Error("the image could not be decoded"));
        img.src = objectUrl;
      });
      if (shown) URL.revokeObjectURL(shown);
      shown = objectUrl;
      img.dataset.url = url;
      permalink.textContent = caption;
      permalink.href = href;
      download.href = url;
      download.download = filename;
    } catch (error) {
      if (mine !== request) return;
      message.textContent = `Could not load: ${error.message}`;
      message.hidden = false;
    } finally {
      if (mine === request) stage.setAttribute("aria-busy", "false");
    }
  }

  function showFace(seed) {
    state = { mode: "face", seed, from: null, to: null };
    setMode("face");
    show(faceUrl(seed), `face #${seed}`, `/?seed=${seed}${psiParam}`, `face-${seed}.png`);
    prefetch();
  }

  function showMorph(from, to) {
    state = { mode: "morph", seed: null, from, to };
    setMode("morph");
    show(morphUrl(from, to), `#${from} → #${to}`, `/?from=${from}&to=${to}${psiParam}`, `morph-${from}-${to}.gif`);
  }

  // Warm the next face in the background so the next press is instant.
  function prefetch() {
    prefetched = randomSeed();
    fetch(faceUrl(prefetched)).catch(() => {});
  }

  function nextSeed() {
    const seed = prefetched ?? randomSeed();
    prefetched = null;
    return seed;
  }

  function advance() {
    // A fresh press leaves any permalink: the address bar goes back to "/" (keeping psi) so a refresh is new again.
    const home = psiParam ? `/?${psiParam.slice(1)}` : "/";
    if (location.pathname + location.search !== home) history.replaceState(null, "", home);
    if (state.mode === "morph") showMorph(state.to, nextSeed());
    else showFace(nextSeed());
  }

  function setMode(mode) {
    $("mode-face").setAttribute("aria-pressed", String(mode === "face"));
    $("mode-morph").setAttribute("aria-pressed", String(mode === "morph"));
    next.firstChild.textContent = mode === "morph" ? "Next morph " : "New face ";
  }

  next.addEventListener("click", advance);
  stage.addEventListener("click", advance);
  $("mode-face").addEventListener("click", () => showFace(state.to ?? state.seed ?? nextSeed()));
  $("mode-morph").addEventListener("click", () => showMorph(state.seed ?? state.from, nextSeed()));
  $("copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(permalink.href);
      $("copy").textContent = "copied";
      setTimeout(() => { $("copy").textContent = "copy link"; }, 1200);
    } catch (_) { window.prompt("Link to this face:", permalink.href); }
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea") || event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.code === "Space" || event.key === " ") { event.preventDefault(); advance(); }
    else if (event.key === "m") showMorph(state.seed ?? state.to, nextSeed());
    else if (event.key === "f") showFace(state.to ?? state.seed ?? nextSeed());
  });

  // Start from the address: /?seed=N, /?from=A&to=B, or a random face.
  const asSeed = (text) => (/^\d{1,10}$/.test(text ?? "") && Number(text) < 2 ** 32 ? Number(text) : null);
  const [seed, from, to] = ["seed", "from", "to"].map((name) => asSeed(params.get(name)));
  if (from !== null && to !== null) showMorph(from, to);
  else showFace(seed ?? randomSeed());
})();
