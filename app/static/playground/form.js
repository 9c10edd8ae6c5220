// The request form: the models from GET /v1/models, the chosen model's schedulers, size, defaults
// and limits, the request body, and the API's errors shown next to the field they name.

const $ = (id) => document.getElementById(id);
const NUMBER_FIELDS = ["width", "height", "num_inference_steps", "guidance_scale", "seed", "num_images", "strength"];
const TEXT_FIELDS = ["negative_prompt", "scheduler"];
// An error's `param` → the control it belongs to (the first part of a dotted path otherwise).
const PARAM_FIELDS = { loras: "lora", stream_previews: "num_inference_steps", control_image: "init_image" };

export const limits = JSON.parse($("limits").textContent);

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  return element;
}

export class RequestForm {
  constructor(images) {
    this.images = images;
    this.models = new Map();
    $("model").addEventListener("change", () => this.showModel());
    $("width").min = $("height").min = limits.min_image_side;
    $("width").max = $("height").max = limits.max_image_side;
    $("num_images").max = limits.max_images_per_request;
    $("guidance_scale").max = limits.max_guidance_scale;
    $("prompt").maxLength = limits.max_prompt_chars;
  }

  /** Fill the model list; keeps the current choice when it is still served. */
  setModels(models) {
    const previous = $("model").value;
    this.models = new Map(models.map((m) => [m.id, m]));
    $("model").replaceChildren(...models.map((m) => option(m.id, m.ready_workers ? m.id : `${m.id} (no worker)`)));
    $("model").value = this.models.has(previous) ? previous : (models[0]?.id ?? "");
    this.showModel();
  }

  get model() {
    return this.models.get($("model").value);
  }

  /** The chosen model's facts, schedulers, placeholders, limits and adapters. */
  showModel() {
    const m = this.model;
    if (!m) return;
    const facts = [];
    if (m.pipeline) facts.push(m.pipeline);
    if (m.width) facts.push(`native ${m.width}×${m.height}`);
    if (m.default_steps) facts.push(`${m.default_steps} steps`);
    if (m.max_steps) facts.push(`at most ${m.max_steps} steps`);
    if (m.fixed_guidance_scale !== null && m.fixed_guidance_scale !== undefined) {
      facts.push(`guidance fixed at ${m.fixed_guidance_scale}`);
    } else if (m.default_guidance_scale !== null && m.default_guidance_scale !== undefined) {
      facts.push(`guidance ${m.default_guidance_scale}`);
    }
    facts.push(`${m.ready_workers} worker${m.ready_workers === 1 ? "" : "s"} ready`, `${m.queue_depth} queued`);
    $("model-info").textContent = m.pipeline ? facts.join(" · ") : `No worker has started for ${m.id} yet. ${facts.join(" · ")}`;

    $("width").placeholder = m.width ?? "";
    $("height").placeholder = m.height ?? "";
    $("num_inference_steps").placeholder = m.default_steps ?? "";
    $("num_inference_steps").max = Math.min(m.max_steps ?? Infinity, limits.max_inference_steps);
    const fixed = m.fixed_guidance_scale !== null && m.fixed_guidance_scale !== undefined;
    $("guidance_scale").disabled = fixed;
    $("guidance_scale").placeholder = fixed ? m.fixed_guidance_scale : (m.default_guidance_scale ?? "");
    $("guidance_scale-help").hidden = !fixed;
    $("guidance_scale-help").textContent = fixed ? "Fixed by this model." : "";
    const own = m.scheduler ? `model default (${m.scheduler})` : "model default";
    $("scheduler").replaceChildren(option("", own), ...(m.schedulers ?? []).map((s) => option(s, s)));
    const loras = (m.loras ?? []).map((l) => l.name);
    $("lora").replaceChildren(option("", "none"), ...loras.map((name) => option(name, name)));
    $("lora-section").hidden = loras.length === 0;
  }

  /** The JSON body of POST /v1/generations: only the fields given (the API fills in the rest). */
  body() {
    const body = { model: $("model").value, prompt: $("prompt").value };
    for (const name of TEXT_FIELDS) if ($(name).value.trim()) body[name] = $(name).value;
    for (const name of NUMBER_FIELDS) {
      const input = $(name);
      if (!input.disabled && input.value.trim() !== "") body[name] = Number(input.value);
    }
    if ($("priority").value !== "normal") body.priority = $("priority").value;
    if ($("lora").value) body.loras = [{ name: $("lora").value, scale: Number($("lora_scale").value || 1) }];
    if ($("previews").checked) {
      const steps = body.num_inference_steps ?? this.model?.default_steps ?? 25;
      body.stream_previews = Math.max(1, Math.round(steps / 10));
    }
    return { ...body, ...this.images.fields() };
  }

  /** Use a known size (the input image's) for width and height. */
  setSize(width, height) {
    $("width").value = width;
    $("height").value = height;
  }

  clearErrors() {
    for (const element of document.querySelectorAll(".field-error")) {
      element.hidden = true;
      element.textContent = "";
    }
    for (const element of document.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
  }

  /** Show an API error next to the field it names (or the key field for 401), and focus that field. */
  showError(error) {
    let field = "form";
    if (error.status === 401 || error.type === "unauthorized") field = "api-key";
    else if (error.param) {
      const head = String(error.param).split(".")[0];
      field = PARAM_FIELDS[head] ?? head;
    }
    if (!$(`${field}-error`)) field = "form";
    const slot = $(`${field}-error`);
    slot.textContent = error.status ? `${error.message} (${error.type}, ${error.status})` : error.message;
    slot.hidden = false;
    const control = field === "form" ? null : $(field);
    if (control) {
      control.setAttribute("aria-invalid", "true");
      control.closest("details")?.setAttribute("open", "");
      control.focus();
    }
  }
}
