// The playground: submit through the public REST API, follow the job over its event stream, show it.

import { api, ApiError, apiKey, follow, newKey, setApiKey } from "./api.js";
import { RequestForm } from "./form.js";
import { ImageInputs } from "./images.js";
import { clearResults, showImages, showSnippets, showState } from "./results.js";

const $ = (id) => document.getElementById(id);
const images = new ImageInputs((width, height) => form.setSize(width, height));
const form = new RequestForm(images);
let current = null; // {id, controller} of the job being followed

async function loadModels() {
  try {
    const models = await api("GET", "/v1/models");
    form.setModels(models.data);
  } catch (error) {
    $("model-info").textContent = "";
    if (error instanceof ApiError) error.param ??= "model";
    form.showError(error);
  }
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("cancel").disabled = !busy;
  $("replay").disabled = busy;
}

/** Follow a job to its end and show it; the body is what produced it (for the snippets). */
async function run(job, body) {
  current?.controller.abort();
  const controller = new AbortController();
  current = { id: job.id, controller };
  clearResults();
  showState(job);
  setBusy(true);
  try {
    const final = await follow(job.id, showState, controller.signal);
    if (!final || current?.id !== job.id) return;
    if (final.status === "succeeded") showImages(final);
    showSnippets(body, Boolean(apiKey()));
  } catch (error) {
    if (!controller.signal.aborted) form.showError(error);
  } finally {
    if (current?.id === job.id) setBusy(false);
  }
}

async function generate(event) {
  event?.preventDefault();
  form.clearErrors();
  const body = form.body();
  setBusy(true);
  try {
    const job = await api("POST", "/v1/generations", body, { "Idempotency-Key": newKey() });
    await run(job, body);
  } catch (error) {
    setBusy(false);
    form.showError(error);
  }
}

async function cancel() {
  if (!current) return;
  try {
    await api("POST", `/v1/generations/${current.id}/cancel`);
  } catch (error) {
    if (error.status !== 409) form.showError(error); // 409: it ended meanwhile
  }
}

async function replay() {
  if (!current) return;
  form.clearErrors();
  try {
    const job = await api("POST", `/v1/generations/${current.id}/replay`);
    await run(job, replayBody(job));
  } catch (error) {
    form.showError(error);
  }
}

/** The generation request equivalent to a replay: the resolved parameters that were set. */
function replayBody(job) {
  const body = { model: job.model, prompt: job.params.prompt };
  for (const [name, value] of Object.entries(job.params)) {
    const unset = value === null || (Array.isArray(value) && value.length === 0);
    if (!unset && !["init_image", "mask_image", "control_image"].includes(name)) body[name] = value;
  }
  return body;
}

async function copy(event) {
  const button = event.currentTarget;
  const text = $(button.dataset.copy).textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    // No clipboard (plain http on another host): select the text for Ctrl+C instead.
    window.getSelection().selectAllChildren($(button.dataset.copy));
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => (button.textContent = button.dataset.label), 2000);
}

$("api-key").value = apiKey();
$("api-key").addEventListener("change", () => {
  setApiKey($("api-key").value.trim());
  form.clearErrors();
  loadModels();
});
$("form").addEventListener("submit", generate);
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generate(event);
});
$("cancel").addEventListener("click", cancel);
$("replay").addEventListener("click", replay);
for (const button of document.querySelectorAll("[data-copy]")) {
  button.dataset.label = button.textContent;
  button.addEventListener("click", copy);
}
loadModels();
