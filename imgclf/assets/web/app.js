"use strict";
// imgclf's web app: the exported model (whole photos in, the run's preprocessing inside the graph) run by ONNX
// Runtime Web's WebAssembly build on this device. labels.json says what the outputs mean.
const $ = (id) => document.getElementById(id);
ort.env.wasm.wasmPaths = "./";
ort.env.logLevel = "error"; // the runtime's warnings (an unknown CPU vendor in WebAssembly) are not the user's business
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation headers, which a plain static host does not send

const ready = (async () => {
  const info = await (await fetch("labels.json")).json();
  const session = await ort.InferenceSession.create(info.model, { executionProviders: ["wasm"] });
  return { info, session };
})();

// RGB bytes of a decoded image, transparency over white as imgclf flattens it. A photo much larger than the model
// needs is first scaled by the browser to twice the side imgclf would decode it at, which bounds the memory the
// graph's resize takes on a phone; the graph then resizes it exactly as the run does.
function toTensor(image, info) {
  const short = Math.min(image.width, image.height);
  const scale = short > 2 * info.least_side ? (2 * info.least_side) / short : 1;
  const w = Math.round(image.width * scale), h = Math.round(image.height * scale);
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, w, h);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(image, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return new ort.Tensor("uint8", rgb, [1, h, w, 3]);
}

function probabilities(logits, info) {
  if (info.task === "multilabel") return Array.from(logits, (z) => 1 / (1 + Math.exp(-z)));
  const top = Math.max(...logits), e = Array.from(logits, (z) => Math.exp(z - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

// The probabilities of every class for an image blob (a picked file, a dropped one, a camera shot).
async function classifyBlob(blob) {
  const { info, session } = await ready;
  const image = await createImageBitmap(blob, { colorSpaceConversion: "none" });
  const input = toTensor(image, info);
  const started = performance.now();
  const out = await session.run({ [session.inputNames[0]]: input });
  const ms = performance.now() - started;
  return { probs: probabilities(out[session.outputNames[0]].data, info), ms };
}

function show(result, info) {
  const { probs, ms } = result;
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  const answer = $("answer");
  answer.className = "";
  if (info.task === "multilabel") {
    const chosen = order.filter(([p, i]) => p >= (Array.isArray(info.threshold) ? info.threshold[i] : 0.5));
    answer.textContent = chosen.length ? chosen.map(([, i]) => info.labels[i]).join(", ") : "none of the labels";
  } else if (info.labels.length === 2) { // a yes/no app: the run's positive class from its tuned threshold
    const yes = probs[info.positive] >= (info.threshold ?? 0.5);
    answer.textContent = info.labels[yes ? info.positive : 1 - info.positive];
    answer.className = yes ? "yes" : "no";
  } else {
    answer.textContent = info.labels[order[0][1]];
  }
  $("top").replaceChildren(...order.slice(0, 5).map(([p, i]) => {
    const row = document.createElement("li");
    const name = document.createElement("span"), bar = document.createElement("div"), pct = document.createElement("span");
    name.textContent = info.labels[i];
    bar.className = "bar"; bar.style.width = `${(100 * p).toFixed(1)}%`;
    pct.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(name, bar, pct);
    return row;
  }));
  $("status").textContent = `answered in ${ms.toFixed(0)} ms on this device`;
}

async function handle(file) {
  if (!file) return;
  const { info } = await ready;
  $("preview").src = URL.createObjectURL(file);
  $("preview").hidden = false;
  try {
    show(await classifyBlob(file), info);
  } catch (err) {
    $("answer").textContent = "";
    $("status").textContent = `cannot read this file as an image (${err.message || err})`;
  }
}

$("file").addEventListener("change", (e) => handle(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); handle(e.dataTransfer.files[0]); });

ready.then(({ info }) => {
  document.title = $("title").textContent = info.title;
  $("status").textContent = `Ready: ${info.labels.length} classes. Nothing leaves this device.`;
}).catch((err) => { $("status").textContent = `The model did not load: ${err.message || err}`; });

if ("serviceWorker" in navigator) navigator.serviceWorker.register("sw.js");

// For scripts and tests: the probabilities of an image given as base64 bytes.
window.imgclf = {
  ready: ready.then(() => true),
  classifyBase64: async (b64) => classifyBlob(new Blob([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))])),
};
