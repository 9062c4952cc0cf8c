// The playground: sends POST /v1/generate with "stream": true and shows the text as it arrives.
// No build step and no dependencies: fetch() reads the server-sent events from the response body.
"use strict";

const $ = (id) => document.getElementById(id);
let controller = null;  // aborts the stream in progress (the server frees its row at once)
let session = null;     // the id the last answer returned, for "continue"

function unescapeStop(text) {
  return text.replace(/\\([ntr\\])/g, (_, c) => ({ n: "\n", t: "\t", r: "\r", "\\": "\\" })[c]);
}

function request() {
  const body = {
    seed: $("seed").value,
    length: Number($("length").value),
    temperature: Number($("temperature").value),
    top_k: Number($("top-k").value),
    top_p: Number($("top-p").value),
    stream: true,
    session: $("continue").checked && session ? session : true,
  };
  if ($("rng-seed").value !== "") body.rng_seed = Number($("rng-seed").value);
  if ($("stop").value !== "") body.stop = [unescapeStop($("stop").value)];
  return body;
}

function show(text, cls) {
  const span = document.createElement("span");
  if (cls) span.className = cls;
  span.textContent = text;
  $("output").appendChild(span);
}

async function generate() {
  const body = request();
  const out = $("output");
  if (!(body.session !== true && $("continue").checked)) out.textContent = "";
  out.classList.remove("error");
  show(body.seed, "seed");
  $("generate").disabled = true;
  $("cancel").disabled = false;
  $("status").textContent = "generating…";
  controller = new AbortController();
  try {
    const response = await fetch("/v1/generate", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const err = await response.json().catch(() => ({ error: response.statusText }));
      throw new Error(err.field ? `${err.field}: ${err.error}` : err.error);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (!line.startsWith("data: ")) continue;
        const event = JSON.parse(line.slice(6));
        if (event.text !== undefined) show(event.text);
        if (event.done) {
          session = event.session;
          $("status").textContent = `${event.characters} characters (${event.finish_reason}` +
            (event.stop ? `: ${JSON.stringify(event.stop)}` : "") + ")";
        }
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      $("status").textContent = "stopped";
    } else {
      out.classList.add("error");
      $("status").textContent = String(e.message || e);
    }
  } finally {
    controller = null;
    $("generate").disabled = false;
    $("cancel").disabled = true;
  }
}

async function describe() {
  try {
    const m = await (await fetch("/v1/model")).json();
    const bpc = m.val_bpc == null ? "" : `, validation ${m.val_bpc.toFixed(3)} bits/char`;
    $("model-info").textContent = `${m.name} (${m.snapshot}): ${m.layers}×${m.units.join("/")} LSTM, ` +
      `${m.vocab_size} tokens (${m.tokenizer})${bpc}; at most ${m.limits.max_length} characters a request`;
    $("length").max = m.limits.max_length;
  } catch (e) {
    $("model-info").textContent = "could not read /v1/model: " + e;
  }
}

$("generate").addEventListener("click", generate);
$("cancel").addEventListener("click", () => controller && controller.abort());
describe();
