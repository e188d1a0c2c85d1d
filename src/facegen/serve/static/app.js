// The page: one face; space, a tap or "New face" shows another. Morph mode walks from one
// face to the next. Faces are addressed by seed, so a link reproduces a face.
// The face is shown a few times the model's side (256 px for a 64 px model), upscaled by the
// server with Lanczos to exactly the screen's pixels (size=), so it reads as a photo; a 64 px
// face blown up in nearest-neighbour blocks reads as a mosaic. The "pixels" toggle shows the
// model's exact pixels instead, each a whole k x k block of screen pixels.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const stage = $("stage"), img = $("face"), message = $("message");
  const permalink = $("permalink"), download = $("download"), next = $("next");
  const pixelsButton = $("pixels"), psiInput = $("psi"), psiValue = $("psi-value");
  const tag = document.body.dataset.tag; // the model's identity: a new model never shows cached faces
  const resolution = Number(document.body.dataset.resolution) || 0; // the model's side in pixels
  const truncation = document.body.dataset.psi !== "";              // the model takes psi (a GAN)
  const MAX_SEED = 2 ** 32 - 1, FRAMES = 16;
  const MAX_SIZE = 1024, MAX_MORPH_SIZE = 512;                      // the server's limits on size=
  const SIDE = Math.max(256, 4 * resolution);                        // CSS px to show the face at, room permitting

  // The address: /?seed=N, /?from=A&to=B, /?psi=P. Whatever it names is checked here, so a
  // bad value is said on the page instead of quietly becoming a random face.
  const params = new URLSearchParams(location.search);
  const problems = [];
  function seedParam(name) {
    if (!params.has(name)) return null;
    const text = params.get(name);
    if (/^\d{1,10}$/.test(text) && Number(text) <= MAX_SEED) return Number(text);
    problems.push(`${name} must be a whole number 0..${MAX_SEED}, not "${text.slice(0, 40)}"`);
    return null;
  }
  function psiParam() {
    if (!params.has("psi")) return null;
    const text = params.get("psi"), value = Number(text);
    if (text.trim() !== "" && value > 0 && value <= 1) return String(value);
    problems.push(`psi must be a number above 0 and at most 1 (1 = no truncation), not "${text.slice(0, 40)}"`);
    return null;
  }
  const [seed, from, to] = ["seed", "from", "to"].map(seedParam);

  // GAN truncation: from the address, else the model's recommended psi. It goes into every
  // image URL and link of a model that has it (and, for any model, when the address names one:
  // the server then says whether the model takes it).
  let psi = psiParam() ?? (document.body.dataset.psi || "1");        // a string, as it goes into URLs
  let psiChosen = params.has("psi");                                  // keep psi in the address bar
  const psiQuery = () => (truncation || params.has("psi") ? `&psi=${encodeURIComponent(psi)}` : "");
  const home = () => (psiChosen ? `/?psi=${encodeURIComponent(psi)}` : "/");
  const linkTo = (face) => `/?${face.mode === "morph" ? `from=${face.from}&to=${face.to}` : `seed=${face.seed}`}${psiQuery()}`;

  let pixels = false;                 // the model's exact pixels instead of the smoothed picture
  let view = { side: 0, size: 0, k: 0 }; // CSS px shown, px served when smoothed, device px per model pixel

  const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];
  const sized = (size) => (pixels ? "" : `&size=${Math.max(16, size)}`);  // the model's own picture for "pixels"
  const faceUrl = (seed) => `/face.png?seed=${seed}${sized(Math.min(MAX_SIZE, view.size))}${psiQuery()}&v=${tag}`;
  // A morph GIF holds 2 x FRAMES pictures: it is served at CSS pixels, not device pixels.
  const morphUrl = (a, b) => `/morph.gif?from=${a}&to=${b}&frames=${FRAMES}${sized(Math.min(MAX_MORPH_SIZE, view.side))}${psiQuery()}&v=${tag}`;

  // Size the stage to k * resolution device pixels, k the largest whole number that fits both
  // SIDE and the room the stylesheet gives it (var(--stage)). Counted in device pixels, so the
  // smoothed face is served at exactly the screen's pixels and the "pixels" view gets whole
  // blocks on a phone's 2x or a desktop's 1.25x screen too. A model larger than the room is
  // shrunk instead. Returns whether the smoothed face's size changed.
  function fit() {
    if (!resolution) return false;
    stage.style.width = "";                                   // back to the stylesheet's room, to measure it
    const dpr = window.devicePixelRatio || 1;
    const room = Math.min(stage.getBoundingClientRect().width, SIDE) * dpr;   // device pixels
    const k = Math.floor(room / resolution);
    const device = k >= 1 ? k * resolution : room;
    stage.style.width = `${device / dpr}px`;
    const before = view.size;
    view = { side: Math.round(device / dpr), size: Math.round(device), k };
    label();
    return view.size !== before;
  }

  function label() {
    const exact = pixels && view.k >= 1;                      // nearest-neighbour shrinking would drop pixels
    stage.classList.toggle("pixelated", exact);
    pixelsButton.setAttribute("aria-pressed", String(pixels));
    $("resolution").textContent =
      `${resolution} × ${resolution} model, shown at ${view.side} px, ${exact ? "exact pixels" : "smoothed"}`;
  }

  let current = null;  // what is on screen: {mode: "face", seed} or {mode: "morph", from, to}
  let shown = null;    // object URL on screen
  let request = 0;     // newer requests win over slower older ones
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

  // The spinner turns only while a request is out; an error stops it and says why.
  const busy = (on) => stage.setAttribute("aria-busy", String(on));
  function fail(text) {
    message.textContent = text;
    message.hidden = false;
    busy(false);
  }

  async function show(url, caption, href, filename) {
    const mine = ++request;
    busy(true);
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
      document.body.dataset.shown = "true";                   // the caption and Download have a face to name
    } catch (error) {
      if (mine === request) fail(`Could not load: ${error.message}`);
    } finally {
      if (mine === request) busy(false);
    }
  }

  function showFace(seed) {
    current = { mode: "face", seed };
    setMode("face");
    show(faceUrl(seed), `face #${seed}`, linkTo(current), `face-${seed}.png`);
    prefetch();
  }

  function showMorph(from, to) {
    current = { mode: "morph", from, to };
    setMode("morph");
    show(morphUrl(from, to), `#${from} → #${to}`, linkTo(current), `morph-${from}-${to}.gif`);
  }

  // Show what is on screen again, at the current psi, size and view; a new face when nothing is.
  function redraw() {
    if (!current) advance();
    else if (current.mode === "morph") showMorph(current.from, current.to);
    else showFace(current.seed);
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
    // A fresh press leaves any permalink: the address bar goes back to "/" (keeping a chosen psi) so a refresh is new again.
    if (location.pathname + location.search !== home()) history.replaceState(null, "", home());
    if (current?.mode === "morph") showMorph(current.to, nextSeed());
    else showFace(nextSeed());
  }

  function setMode(mode) {
    $("mode-face").setAttribute("aria-pressed", String(mode === "face"));
    $("mode-morph").setAttribute("aria-pressed", String(mode === "morph"));
    next.firstChild.textContent = mode === "morph" ? "Next morph " : "New face ";
  }

  function togglePixels() {
    pixels = !pixels;
    label();
    redraw();
  }

  // The truncation slider: moving it shows the same face at the new psi, and the address
  // (a permalink, or "/") takes the psi along.
  psiInput.value = psi;
  psiValue.textContent = psi;
  psiInput.addEventListener("input", () => { psiValue.textContent = String(Number(psiInput.value)); });
  psiInput.addEventListener("change", () => {
    psi = String(Number(psiInput.value));
    psiChosen = true;
    const onPermalink = current && /[?&](seed|from)=/.test(location.search);
    redraw();
    const address = onPermalink ? linkTo(current) : home();
    if (location.pathname + location.search !== address) history.replaceState(null, "", address);
  });

  next.addEventListener("click", advance);
  stage.addEventListener("click", advance);
  pixelsButton.addEventListener("click", togglePixels);
  $("mode-face").addEventListener("click", () => showFace(current?.to ?? current?.seed ?? nextSeed()));
  $("mode-morph").addEventListener("click", () => showMorph(current?.seed ?? current?.from ?? nextSeed(), nextSeed()));
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
    else if (event.key === "m") showMorph(current?.seed ?? current?.to ?? nextSeed(), nextSeed());
    else if (event.key === "f") showFace(current?.to ?? current?.seed ?? nextSeed());
    else if (event.key === "p") togglePixels();
  });

  // A resize (or a zoom, which changes the pixel ratio) that changes the smoothed face's size
  // fetches it again at the new size, once the resizing stops.
  let refit = null;
  window.addEventListener("resize", () => {
    if (!fit() || pixels || !current) return;
    clearTimeout(refit);
    refit = setTimeout(redraw, 200);
  });

  // Start from the address: /?seed=N, /?from=A&to=B, or a random face; a bad value is said, not guessed.
  fit();
  if (problems.length) fail(problems.join("; "));
  else if (from !== null && to !== null) showMorph(from, to);
  else showFace(seed ?? randomSeed());
})();
