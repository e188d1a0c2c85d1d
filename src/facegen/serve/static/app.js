// The page: one large face; space, a tap or "New face" shows another. Morph mode walks
// from one face to the next. Faces are addressed by seed, so a link reproduces a face.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const stage = $("stage"), img = $("face"), message = $("message");
  const permalink = $("permalink"), download = $("download"), next = $("next");
  const tag = document.body.dataset.tag; // the model's identity: a new model never shows cached faces
  const FRAMES = 16;

  const randomSeed = () => crypto.getRandomValues(new Uint32Array(1))[0];
  const faceUrl = (seed) => `/face.png?seed=${seed}&v=${tag}`;
  const morphUrl = (a, b) => `/morph.gif?from=${a}&to=${b}&frames=${FRAMES}&v=${tag}`;

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
    show(faceUrl(seed), `face #${seed}`, `/?seed=${seed}`, `face-${seed}.png`);
    prefetch();
  }

  function showMorph(from, to) {
    state = { mode: "morph", seed: null, from, to };
    setMode("morph");
    show(morphUrl(from, to), `#${from} → #${to}`, `/?from=${from}&to=${to}`, `morph-${from}-${to}.gif`);
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
    // A fresh press leaves any permalink: the address bar goes back to "/" so a refresh is new again.
    if (location.search) history.replaceState(null, "", "/");
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
  const params = new URLSearchParams(location.search);
  const asSeed = (text) => (/^\d{1,10}$/.test(text ?? "") && Number(text) < 2 ** 32 ? Number(text) : null);
  const [seed, from, to] = ["seed", "from", "to"].map((name) => asSeed(params.get(name)));
  if (from !== null && to !== null) showMorph(from, to);
  else showFace(seed ?? randomSeed());
})();
