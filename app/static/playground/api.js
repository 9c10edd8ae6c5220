// Calls to the public REST API: the API key, the error envelope, and a job's server-sent events.
//
// Events are read with fetch() rather than EventSource, because EventSource cannot send the
// Authorization header; a dropped stream is re-opened with Last-Event-ID, like the Python client.

const KEY_STORAGE = "diffusion-api-key";
export const TERMINAL = new Set(["succeeded", "failed", "canceled"]);

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY_STORAGE, value);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function headers(extra) {
  const all = { ...extra };
  const key = apiKey();
  if (key) all.Authorization = `Bearer ${key}`;
  return all;
}

/** An error answer of the API: its status and the envelope's type, message and param. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || "unknown";
    this.param = error.param ?? null;
  }
}

const UNREACHABLE = { type: "connection", message: "The service cannot be reached.", param: null };

async function errorOf(response) {
  const data = await response.json().catch(() => null);
  return new ApiError(response.status, data?.error ?? { type: "unknown", message: `HTTP ${response.status}` });
}

/** One JSON request; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(method, path, body, extraHeaders = {}) {
  const init = { method, headers: headers({ Accept: "application/json", ...extraHeaders }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, UNREACHABLE);
  }
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

/** A random Idempotency-Key (crypto.randomUUID exists only on https and localhost). */
export function newKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Server-sent events of a response body: {id, data} per event; comments (keep-alives) skipped. */
async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { id, data: data.join("\n") };
        data = [];
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(text);
        else if (field === "id") id = text;
      }
    }
  }
}

/** Follow a job until it ends, calling onJob with every state; resolves to the terminal state. */
export async function follow(jobId, onJob, signal) {
  let last = null;
  let failures = 0;
  while (!signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (last) extra["Last-Event-ID"] = last;
      const response = await fetch(`/v1/generations/${jobId}/events`, { headers: headers(extra), signal });
      if (!response.ok) throw await errorOf(response);
      for await (const event of events(response.body)) {
        failures = 0;
        if (event.id) last = event.id;
        const job = JSON.parse(event.data);
        onJob(job);
        if (TERMINAL.has(job.status)) return job;
      }
    } catch (error) {
      if (error instanceof ApiError || signal.aborted) throw error;
    }
    failures += 1; // the stream dropped: back off (with jitter), then resume after the last event
    if (failures > 6) throw new ApiError(0, { ...UNREACHABLE, message: "Lost the job's event stream." });
    await sleep(Math.min(8000, 250 * 2 ** failures) * (0.5 + Math.random() / 2));
  }
  return null;
}
