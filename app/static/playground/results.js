// What the page shows of a job: status (queue position and ETA, stage and step), the progress bar,
// latent previews, the images with their seeds and reproducibility records, and the request as code.

const $ = (id) => document.getElementById(id);
const STAGES = {
  queued: "Queued",
  loading: "Loading (text encoding)",
  denoising: "Denoising",
  decoding: "Decoding",
  storing: "Storing",
  done: "Done",
};

function seconds(iso) {
  return Math.max(0, Math.round((Date.parse(iso) - Date.now()) / 1000));
}

/** One sentence for the status line. */
export function describe(job) {
  const p = job.progress;
  if (job.status === "queued") {
    const position = job.queue_position ?? 0;
    const ahead = position === 0 ? "next in line" : `${position} job${position === 1 ? "" : "s"} ahead`;
    const eta = job.estimated_start_at ? `, starts in about ${seconds(job.estimated_start_at)} s` : "";
    return `Queued: ${ahead}${eta}.`;
  }
  if (job.status === "running") {
    const step = p.stage === "denoising" ? `: step ${p.step} of ${p.total_steps}` : "";
    return `Running. ${STAGES[p.stage] ?? p.stage}${step}.`;
  }
  if (job.status === "failed") return `Failed: ${job.error?.message ?? "unknown error"} (${job.error?.type}).`;
  if (job.status === "canceled") return `Canceled${job.cancel_reason === "deadline" ? " (start deadline passed)" : ""}.`;
  const took = job.started_at && job.finished_at ? (Date.parse(job.finished_at) - Date.parse(job.created_at)) / 1000 : 0;
  return `Done in ${took.toFixed(1)} s.`;
}

/** Show one state of the job: status line, bar, preview. */
export function showState(job) {
  $("status").textContent = describe(job);
  $("progress").value = job.progress.fraction;
  $("progress-text").textContent = `${Math.round(job.progress.fraction * 100)}%`;
  if (job.preview) {
    $("preview").src = job.preview;
    $("preview-box").hidden = false;
  }
  if (job.status !== "running" && job.status !== "queued") $("preview-box").hidden = true;
  $("job-id").textContent = `Job ${job.id}`;
  $("job-bar").hidden = false;
}

export function clearResults() {
  $("results").replaceChildren();
  $("preview-box").hidden = true;
  $("preview").removeAttribute("src");
}

function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}

/** The images of a finished job: each with its seed, size, download link and reproducibility record. */
export function showImages(job) {
  const extension = { "image/jpeg": "jpg", "image/webp": "webp" };
  const figures = job.images.map((image, k) => {
    const name = `${job.id}-${k}.${extension[image.content_type] ?? "png"}`;
    const picture = element("img", {
      src: image.url,
      alt: `Image ${k + 1} of ${job.images.length} for “${job.params.prompt}”, seed ${image.seed}`,
      width: image.width,
      height: image.height,
    });
    const record = element("details", {}, [
      element("summary", { textContent: "Reproducibility" }),
      element("pre", { textContent: JSON.stringify(image.reproducibility, null, 2), tabIndex: 0 }),
    ]);
    const caption = element("figcaption", {}, [
      element("span", { className: "seed", textContent: `Seed ${image.seed} · ${image.width}×${image.height}` }),
      element("a", { href: image.url, download: name, textContent: "Download", title: name }),
      record,
    ]);
    return element("figure", {}, [picture, caption]);
  });
  $("results").replaceChildren(...figures);
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

function python(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "string" || typeof value === "number") return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) return `[${value.map((v) => python(v, indent)).join(", ")}]`;
  const items = Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${python(v, inner)},`);
  return `{\n${items.join("\n")}\n${indent}}`;
}

/** The request exactly as sent, as a curl command and as Python with diffusion_client. */
export function showSnippets(body, hasKey) {
  const origin = window.location.origin;
  const auth = hasKey ? `  -H "Authorization: Bearer $DIFFUSION_API_KEY" \\\n` : "";
  $("snippet-curl").textContent =
    `curl -X POST ${shellQuote(`${origin}/v1/generations`)} \\\n` +
    `  -H 'Content-Type: application/json' \\\n${auth}` +
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`;
  const { prompt, ...rest } = body;
  const args = Object.entries(rest).map(([k, v]) => `        ${k}=${python(v, "        ")},`);
  const key = hasKey ? "  # the key comes from $DIFFUSION_API_KEY" : "";
  $("snippet-python").textContent = [
    "from diffusion_client import DiffusionClient",
    "",
    `with DiffusionClient(${JSON.stringify(origin)}) as client:${key}`,
    "    job = client.generate(",
    `        ${JSON.stringify(prompt)},`,
    ...args,
    "    )",
    "    for k, image in enumerate(job.images):",
    '        with open(f"{job.id}-{k}.{image.content_type.split(\'/\')[1]}", "wb") as f:',
    "            f.write(client.download(image))",
  ].join("\n");
  $("snippets").hidden = false;
}
