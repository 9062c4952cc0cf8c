/* chargen.js: run a chargen web export (chargen_export.json + weights.bin) in a browser, with no dependencies.
 *
 *   const model = await chargen.Model.load("chargen_export.json");   // or Model.fromParts(manifest, arrayBuffer)
 *   const gen = new chargen.Generator(model);
 *   for (const piece of gen.stream("ROMEO:", {length: 200, temperature: 0.8, rngSeed: 1})) out += piece;
 *
 * The network is an embedding, a stack of recurrent layers and a dense layer. Each kind of cell is one
 * entry of CELLS (its state's vectors and its step function); Model.step runs the generic loop over
 * the layers, so a new cell is one new entry. Arithmetic is in float64 on the float32 weights, so
 * probabilities agree with chargen's numpy engine to about 1e-6. Sampling follows chargen.sampling.pick
 * (temperature, top-k, top-p) with a seeded xoshiro128** generator: the same rngSeed gives the same text
 * here every time, but not the same text as `chargen sample`, whose generator is numpy's.
 */
(function (root) {
  "use strict";

  const FORMAT = "chargen-export", VERSION = 1, MODEL_FORMAT = "web";

  // ------------------------------------------------------------------ cells

  function sigmoid(x) { return 1 / (1 + Math.exp(-x)); }

  /* out += x M for a (rows, cols) matrix M held by columns (byColumns): each output is one dot product over
     contiguous memory, in eight running sums (in V8 ~2x faster than adding x[i] times row i to out). */
  function addVecMat(out, x, columns) {
    const n = x.length, c = columns;
    for (let j = 0, k = 0; j < out.length; j++) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, i = 0;
      for (; i + 7 < n; i += 8, k += 8) {
        s0 += x[i] * c[k]; s1 += x[i + 1] * c[k + 1]; s2 += x[i + 2] * c[k + 2]; s3 += x[i + 3] * c[k + 3];
        s4 += x[i + 4] * c[k + 4]; s5 += x[i + 5] * c[k + 5]; s6 += x[i + 6] * c[k + 6]; s7 += x[i + 7] * c[k + 7];
      }
      for (; i < n; i++, k++) s0 += x[i] * c[k];
      out[j] += ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
    }
  }

  /* A row-major (rows, cols) matrix rearranged by columns: column j is out[j * rows .. (j + 1) * rows). */
  function byColumns(m, rows, cols) {
    const out = new Float32Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = m[i * cols + j];
    return out;
  }

  /* A cell (the manifest's layer "cell", chargen/net/<cell>.py): `state` names its vectors (each `units`
     long), `weights` gives each array's shape by its role name in the manifest, `matrices` the roles that
     multiply a vector (rearranged by columns, byColumns, for addVecMat; the others stay row-major), and
     `step(weights, units, x, state)` returns {output, state} for one time step. */
  const CELLS = {
    // Keras's LSTM: z = x K + h R + b, gate blocks in the order i, f, c, o; sigmoid and tanh.
    lstm: {
      state: ["h", "c"],
      weights: { kernel: (input, u) => [input, 4 * u], recurrent_kernel: (input, u) => [u, 4 * u], bias: (input, u) => [4 * u] },
      matrices: ["kernel", "recurrent_kernel"],
      step(w, u, x, s) {
        const z = Float64Array.from(w.bias);
        addVecMat(z, x, w.kernel);
        addVecMat(z, s.h, w.recurrent_kernel);
        const h = new Float64Array(u), c = new Float64Array(u);
        for (let j = 0; j < u; j++) {
          c[j] = sigmoid(z[u + j]) * s.c[j] + sigmoid(z[j]) * Math.tanh(z[2 * u + j]);
          h[j] = sigmoid(z[3 * u + j]) * Math.tanh(c[j]);
        }
        return { output: h, state: { h, c } };
      },
    },
    // Keras's GRU with reset_after=True: xp = x K + b[0], m = h R + b[1], gate blocks z, r, h;
    // z = sigmoid(xp_z + m_z), r = sigmoid(xp_r + m_r), hh = tanh(xp_h + r m_h), h' = z h + (1 - z) hh.
    gru: {
      state: ["h"],
      weights: { kernel: (input, u) => [input, 3 * u], recurrent_kernel: (input, u) => [u, 3 * u], bias: (input, u) => [2, 3 * u] },
      matrices: ["kernel", "recurrent_kernel"],
      step(w, u, x, s) {
        const xp = Float64Array.from(w.bias.subarray(0, 3 * u)), m = Float64Array.from(w.bias.subarray(3 * u));
        addVecMat(xp, x, w.kernel);
        addVecMat(m, s.h, w.recurrent_kernel);
        const h = new Float64Array(u);
        for (let j = 0; j < u; j++) {
          const z = sigmoid(xp[j] + m[j]), r = sigmoid(xp[u + j] + m[u + j]);
          const hh = Math.tanh(xp[2 * u + j] + r * m[2 * u + j]);
          h[j] = z * s.h[j] + (1 - z) * hh;
        }
        return { output: h, state: { h } };
      },
    },
  };

  // ------------------------------------------------------------------ the model

  function fail(message) { throw new Error(message); }

  function sameShape(a, b) { return a.length === b.length && a.every((n, i) => n === b[i]); }

  class Model {
    /* manifest: the parsed chargen_export.json; buffer: the ArrayBuffer of its weights file. */
    constructor(manifest, buffer) {
      if (manifest.format !== FORMAT || manifest.model_format !== MODEL_FORMAT)
        fail("this is not a chargen web export (chargen_export.json has format " + manifest.format + "/" +
             manifest.model_format + "); export with: chargen export NAME --format web");
      if (manifest.version !== VERSION)
        fail("chargen_export.json is version " + manifest.version + ", this page reads version " + VERSION +
             "; export the model again with this chargen");
      if (buffer.byteLength !== manifest.weights_bytes)
        fail(manifest.weights_file + " has " + buffer.byteLength + " bytes, the manifest says " + manifest.weights_bytes +
             "; the file is truncated or from another export, copy the folder again");
      this.manifest = manifest;
      this.tokens = manifest.chars;
      this.vocabSize = manifest.vocab_size;
      const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
      const tensor = (name, shape) => {  // a Float32Array of the tensor's values, row-major
        const t = manifest.tensors[name] || fail("the manifest has no tensor " + name);
        if (!sameShape(t.shape, shape)) fail(name + " has shape [" + t.shape + "], expected [" + shape + "]");
        const count = t.shape.reduce((a, b) => a * b, 1);
        if (t.offset % 4 || t.offset + 4 * count > buffer.byteLength) fail(name + " lies outside " + manifest.weights_file);
        if (little) return new Float32Array(buffer, t.offset, count);
        const data = new Float32Array(count), view = new DataView(buffer, t.offset, 4 * count);
        for (let i = 0; i < count; i++) data[i] = view.getFloat32(4 * i, true);
        return data;
      };
      // matrices go by columns (for addVecMat); the embedding and biases stay rows, one per token or bias
      const matrix = (name, shape) => byColumns(tensor(name, shape), ...shape);
      this.embedding = tensor(manifest.embedding, [this.vocabSize, manifest.embed]);
      let input = manifest.embed;
      this.layers = manifest.layers.map((layer) => {
        const cell = CELLS[layer.cell] || fail("cell " + layer.cell + " is not one this page knows (" +
                                               Object.keys(CELLS).join(", ") + ")");
        const weights = {};
        for (const [role, shape] of Object.entries(cell.weights))
          weights[role] = (cell.matrices.includes(role) ? matrix : tensor)(layer.weights[role], shape(input, layer.units));
        input = layer.units;
        return { cell, units: layer.units, weights };
      });
      this.denseKernel = matrix(manifest.output.kernel, [input, this.vocabSize]);
      this.denseBias = tensor(manifest.output.bias, [this.vocabSize]);
    }

    /* Fetch the manifest and its weights file (which is found beside it). */
    static async load(url = "chargen_export.json") {
      const manifestUrl = new URL(url, document.baseURI);
      const manifest = await fetchOk(manifestUrl).then((r) => r.json());
      const buffer = await fetchOk(new URL(manifest.weights_file, manifestUrl)).then((r) => r.arrayBuffer());
      return new Model(manifest, buffer);
    }

    /* Per layer, the cell's vectors, all zeros: the state before any text. */
    zeroState() {
      return this.layers.map((l) => Object.fromEntries(l.cell.state.map((n) => [n, new Float64Array(l.units)])));
    }

    /* Feed token `id` with `state` (left unchanged): {logits, state} with the logits over the next token. */
    step(id, state) {
      if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) fail("token id " + id + " is not in 0.." + (this.vocabSize - 1));
      if (!Array.isArray(state) || state.length !== this.layers.length) fail("the state must have one entry per layer");
      let x = this.embedding.subarray(id * this.manifest.embed, (id + 1) * this.manifest.embed);
      const next = this.layers.map((layer, i) => {
        const out = layer.cell.step(layer.weights, layer.units, x, state[i]);
        x = out.output;
        return out.state;
      });
      const logits = Float64Array.from(this.denseBias);
      addVecMat(logits, x, this.denseKernel);
      return { logits, state: next };
    }

    /* Test hook: from the zero state, feed `ids` one by one; per step, the probabilities of the next token. */
    trace(ids) {
      let state = this.zeroState();
      return ids.map((id) => {
        const out = this.step(id, state);
        state = out.state;
        return Array.from(distribution(out.logits, { temperature: 1, topK: 0, topP: 1 }));
      });
    }
  }

  async function fetchOk(url) {
    const response = await fetch(url);
    if (!response.ok) fail(url + ": HTTP " + response.status);
    return response;
  }

  // ------------------------------------------------------------------ tokenizers

  class Tokenizer {
    /* The export's vocabulary: one token per character ("char"), or BPE pieces with their merges ("bpe"). */
    constructor(manifest) {
      this.kind = manifest.tokenizer;
      this.tokens = manifest.chars;
      this.ids = new Map(this.tokens.map((t, i) => [t, i]));
      this.lengths = this.tokens.map((t) => Array.from(t).length); // in characters (code points), as Python counts
      this.alphabet = new Set(this.tokens.filter((t) => Array.from(t).length === 1));
      if (this.kind === "bpe") this.ranks = new Map(manifest.merges.map(([a, b], rank) => [a + "\u0000" + b, rank]));
      else if (this.kind !== "char") fail("tokenizer " + this.kind + " is not one this page knows (char, bpe)");
    }

    /* The distinct characters of `text` the vocabulary lacks, in code point order. */
    unknownChars(text) {
      return [...new Set(Array.from(text).filter((ch) => !this.alphabet.has(ch)))].sort((a, b) => a.codePointAt(0) - b.codePointAt(0));
    }

    /* Text -> token ids; throws an Error naming the characters the vocabulary lacks. */
    encode(text) {
      const unknown = this.unknownChars(text);
      if (unknown.length) fail("characters not in the vocabulary: " + unknown.map((c) => JSON.stringify(c)).join(", "));
      if (this.kind === "char") return Array.from(text, (ch) => this.ids.get(ch));
      return words(text).flatMap((word) => this.bpeWord(word).map((t) => this.ids.get(t)));
    }

    /* Merge the adjacent pair with the lowest rank (the leftmost of equals) until no pair is a merge. */
    bpeWord(word) {
      const parts = Array.from(word);
      for (;;) {
        let best = -1, bestRank = Infinity;
        for (let i = 0; i + 1 < parts.length; i++) {
          const rank = this.ranks.get(parts[i] + "\u0000" + parts[i + 1]);
          if (rank !== undefined && rank < bestRank) { best = i; bestRank = rank; }
        }
        if (best < 0) return parts;
        parts.splice(best, 2, parts[best] + parts[best + 1]);
      }
    }

    decode(ids) { return ids.map((i) => this.tokens[i]).join(""); }
  }

  /* chargen's BPE words: a word starts at every space and after every newline (chargen/bpe.py). */
  function words(text) {
    const out = [];
    let word = "";
    for (const ch of text) {
      if (ch === " " && word) { out.push(word); word = ""; }
      word += ch;
      if (ch === "\n") { out.push(word); word = ""; }
    }
    if (word) out.push(word);
    return out;
  }

  // ------------------------------------------------------------------ sampling

  /* A seeded generator of floats in [0, 1): xoshiro128**, its state filled by splitmix32 from the seed. */
  function rng(seed) {
    if (!(Number.isSafeInteger(seed) && seed >= 0)) fail("the random seed must be an integer >= 0, got " + seed);
    let x = (seed >>> 0) ^ Math.floor(seed / 4294967296);
    const splitmix = () => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    const s = new Uint32Array([splitmix(), splitmix(), splitmix(), splitmix()]);
    const next = () => {
      const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
      const t = s[1] << 9;
      s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
      s[2] ^= t; s[3] = rotl(s[3], 11);
      return result;
    };
    return () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992; // 53 random bits
  }

  function rotl(v, k) { return (v << k) | (v >>> (32 - k)); }

  /* The distribution a token is drawn from: softmax(logits / temperature), cut to the top_k most likely
     and to the smallest set reaching top_p, renormalised (chargen.sampling.pick). Not for temperature 0. */
  function distribution(logits, { temperature, topK, topP }) {
    const z = Array.from(logits, (v) => v / temperature);
    if (topK > 0 && topK < z.length) {
      const kth = [...z].sort((a, b) => b - a)[topK - 1];
      for (let i = 0; i < z.length; i++) if (z[i] < kth) z[i] = -Infinity;
    }
    const max = z.reduce((a, b) => (b > a ? b : a), -Infinity);
    const p = Float64Array.from(z, (v) => Math.exp(v - max));
    normalise(p);
    if (topP < 1) {
      const order = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
      let before = 0;
      const drop = [];
      for (const i of order) { if (before >= topP) drop.push(i); before += p[i]; } // keep the smallest prefix reaching top_p
      for (const i of drop) p[i] = 0;
      normalise(p);
    }
    return p;
  }

  function normalise(p) {
    const sum = p.reduce((a, b) => a + b, 0);
    for (let i = 0; i < p.length; i++) p[i] /= sum;
  }

  /* One token id from logits: the most likely at temperature 0, else drawn with `random`. */
  function pick(logits, options, random) {
    if (options.temperature === 0) {
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      return best;
    }
    const p = distribution(logits, options), u = random();
    let cum = 0, i = 0;
    for (; i < p.length - 1; i++) { cum += p[i]; if (cum >= u) break; }
    return i;
  }

  /* The options `chargen sample` takes, checked as chargen.config.SampleConfig checks them. */
  function checkOptions({ length = 500, temperature = 0.8, topK = 0, topP = 1, rngSeed = null, random = null,
                          unknown = "error" } = {}) {
    const need = (ok, name, rule, value) => { if (!ok) fail(name + " must be " + rule + ", got " + value); };
    need(Number.isInteger(length) && length >= 0, "length", "an integer >= 0", length);
    need(Number.isFinite(temperature) && temperature >= 0, "temperature", ">= 0", temperature);
    need(Number.isInteger(topK) && topK >= 0, "top-k", "an integer >= 0", topK);
    need(Number.isFinite(topP) && topP > 0 && topP <= 1, "top-p", "in (0, 1]", topP);
    need(rngSeed === null || (Number.isSafeInteger(rngSeed) && rngSeed >= 0), "random seed", "an integer >= 0 or empty", rngSeed);
    need(random === null || typeof random === "function", "random", "a function (from chargen.rng) or null", random);
    need(unknown === "error" || unknown === "skip", "unknown", "error or skip", unknown);
    return { length, temperature, topK, topP, rngSeed, random, unknown };
  }

  // ------------------------------------------------------------------ generating

  class Generator {
    /* A model with its own state: text fed or generated moves it on, as chargen.Generator's does. */
    constructor(model, tokenizer = new Tokenizer(model.manifest)) {
      this.model = model;
      this.tokenizer = tokenizer;
      this.reset();
    }

    reset() { this.state = this.model.zeroState(); this.logits = null; }

    /* Feed `text` from the current state; `unknown` is "error" or "skip" for characters the model never saw. */
    prime(text, unknown = "error") {
      const missing = this.tokenizer.unknownChars(text);
      if (missing.length && unknown === "error")
        fail("the seed has characters the model never saw: " + missing.map((c) => JSON.stringify(c)).join(", ") +
             "; remove them or choose to skip them");
      const kept = missing.length ? Array.from(text).filter((ch) => !missing.includes(ch)).join("") : text;
      for (const id of this.tokenizer.encode(kept)) this.feed(id);
    }

    feed(id) {
      const out = this.model.step(id, this.state);
      this.state = out.state;
      this.logits = out.logits;
    }

    /* Prime with `seed` (checked and fed at once), then return an iterator over each token's text, `length`
       characters in all (with BPE the last token may run over by a few). Each piece moves the state on,
       so a later call continues the text. */
    stream(seed, options) {
      const o = checkOptions(options);
      this.prime(seed, o.unknown);
      if (this.logits === null) this.feed(this.model.manifest.start_token);
      return this.pieces(o);
    }

    *pieces(o) {
      // `random` (a chargen.rng) carries one random sequence across calls; else a new one from rngSeed
      const random = o.temperature === 0 ? null : o.random || rng(o.rngSeed === null ? Math.floor(Math.random() * 2 ** 32) : o.rngSeed);
      for (let have = 0; have < o.length;) {
        const id = pick(this.logits, o, random);
        have += this.tokenizer.lengths[id];
        this.feed(id);
        yield this.tokenizer.tokens[id];
      }
    }
  }

  const api = { FORMAT, VERSION, CELLS, Model, Tokenizer, Generator, distribution, pick, rng, checkOptions, words };
  if (typeof module === "object" && module.exports) module.exports = api;
  else root.chargen = api;
})(typeof self !== "undefined" ? self : this);
