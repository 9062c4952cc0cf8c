/* page.js: the page's side of a chargen web export: load the model, read the controls, stream text.
 *
 * Over http(s) the model is fetched from beside the page. Opened as a file (file://), the browser
 * refuses those fetches, so the page asks for the two files instead and reads them with FileReader.
 * window.chargenPage.ready resolves to {model, generator} once a model is loaded (tests use it).
 */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const MANIFEST = "chargen_export.json";
  let generator = null, running = null, random = null, resolveReady;
  window.chargenPage = { ready: new Promise((resolve) => { resolveReady = resolve; }) };

  function showError(e) { $("error").textContent = e instanceof Error ? e.message : String(e); }

  function use(model) {
    generator = new chargen.Generator(model);
    const m = model.manifest, src = m.source || {};
    $("model-name").textContent = src.run ? src.run + " (" + src.which + ", epoch " + src.epoch + ")" : "";
    $("model-info").textContent = m.layers.length + " " + m.layers[0].cell.toUpperCase() + " layer" +
      (m.layers.length > 1 ? "s" : "") + " of " + m.units.join(", ") + " units, " + m.vocab_size + " " +
      (m.tokenizer === "char" ? "characters" : "BPE tokens") + "; it runs in this page, nothing is sent anywhere.";
    $("status").textContent = "Ready.";
    $("pick-files").hidden = true;
    $("generate").disabled = false;
    resolveReady({ model, generator });
  }

  async function loadServed() {
    if (location.protocol === "file:") { askForFiles(); return; }
    try {
      use(await chargen.Model.load(MANIFEST));
    } catch (e) {
      askForFiles("The model could not be loaded from beside this page (" + e.message + ").");
    }
  }

  function askForFiles(why) {
    $("status").textContent = why || "Opened as a file: choose the model's files below.";
    $("pick-files").hidden = false;
  }

  $("files").addEventListener("change", async () => {
    const files = Array.from($("files").files);
    try {
      const manifestFile = files.find((f) => f.name === MANIFEST);
      if (!manifestFile) throw new Error("choose " + MANIFEST + " too (with ctrl or shift), not only " + files.map((f) => f.name).join(", "));
      const manifest = JSON.parse(await manifestFile.text());
      const weightsFile = files.find((f) => f.name === manifest.weights_file);
      if (!weightsFile) throw new Error("choose " + manifest.weights_file + " too, from the same folder");
      $("error").textContent = "";
      use(new chargen.Model(manifest, await weightsFile.arrayBuffer()));
    } catch (e) {
      showError(e);
    }
  });

  /* The controls as chargen.checkOptions wants them; an empty or non-numeric box is reported, not guessed. */
  function readOptions() {
    const number = (id, name) => {
      const text = $(id).value.trim(), value = Number(text);
      if (text === "" || !Number.isFinite(value)) throw new Error(name + " must be a number, got " + JSON.stringify($(id).value));
      return value;
    };
    const seedText = $("rng-seed").value.trim();
    return chargen.checkOptions({
      length: number("length", "length"), temperature: number("temperature", "temperature"),
      topK: number("top-k", "top-k"), topP: number("top-p", "top-p"),
      rngSeed: seedText === "" ? null : number("rng-seed", "random seed"),
      unknown: $("skip-unknown").checked ? "skip" : "error",
    });
  }

  function setRunning(on) {
    $("generate").disabled = on;
    $("continue").disabled = on;
    $("stop").disabled = !on;
  }

  /* Step the generator in slices of ~25 ms, showing each slice's text, so the page stays responsive. */
  async function run(fresh) {
    if (!generator || running) return;
    $("error").textContent = "";
    let options, pieces;
    const seed = fresh ? $("seed").value : "";
    try {
      options = readOptions();
      // Continue goes on with the same random sequence: Generate 300 + Continue 300 = Generate 600
      const next = fresh || !random ? chargen.rng(options.rngSeed ?? Math.floor(Math.random() * 2 ** 32)) : random;
      if (fresh) generator.reset();
      pieces = generator.stream(seed, { ...options, random: next });
      random = next;
    } catch (e) { showError(e); return; }
    const text = $("output-text"), me = { stopped: false }, started = performance.now();
    running = me;
    setRunning(true);
    if (fresh) { $("output-seed").textContent = seed; text.textContent = ""; }
    const node = text.appendChild(document.createTextNode(""));
    let count = 0;
    try {
      for (let done = false; !done && !me.stopped;) {
        const until = performance.now() + 25;
        let chunk = "";
        while (performance.now() < until) {
          const r = pieces.next();
          if (r.done) { done = true; break; }
          chunk += r.value;
        }
        node.appendData(chunk);
        count += Array.from(chunk).length;
        if (!done) await new Promise((resolve) => setTimeout(resolve, 0));
      }
      const seconds = (performance.now() - started) / 1000;
      $("status").textContent = (me.stopped ? "Stopped after " : "Generated ") + count + " characters in " +
        (seconds < 1 ? Math.round(seconds * 1000) + " ms" : seconds.toFixed(2) + " s") +
        (seconds >= 0.1 ? " (" + Math.round(count / seconds) + " characters/s)." : ".");
    } catch (e) {
      showError(e);
    } finally {
      running = null;
      setRunning(false);
    }
  }

  $("controls").addEventListener("submit", (ev) => { ev.preventDefault(); run(true); });
  $("continue").addEventListener("click", () => run(false));
  $("stop").addEventListener("click", () => { if (running) running.stopped = true; });
  loadServed();
})();
