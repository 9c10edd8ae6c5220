// The input image and its mask: the image is read as a data URL; the mask is painted on a canvas
// the size of the image (white = repaint) with a pointer or a finger, or uploaded as a file (which
// is drawn into the canvas, so it can be touched up). Uploading is the keyboard-only route.

const $ = (id) => document.getElementById(id);

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("not an image this browser can read"));
    image.src = src;
  });
}

export class ImageInputs {
  /** Wires the file inputs, the canvas and its buttons; `onSize(w, h)` gets the input image's size. */
  constructor(onSize) {
    this.onSize = onSize;
    this.init = null; // data URL of the input image
    this.maskFile = null; // data URL of an uploaded mask, when there is no input image to draw on
    this.painted = false;
    this.canvas = $("mask-canvas");
    this.context = this.canvas.getContext("2d");
    $("init_image").addEventListener("change", () => this.loadInit());
    $("mask_image").addEventListener("change", () => this.loadMask());
    $("mask-clear").addEventListener("click", () => this.clearMask());
    $("image-remove").addEventListener("click", () => this.remove());
    this.bindPainting();
  }

  async loadInit() {
    const file = $("init_image").files[0];
    if (!file) return this.remove();
    this.init = await readDataUrl(file);
    const image = await loadImage(this.init).catch(() => null);
    if (!image) return; // the API names the field when the bytes are not an image
    $("init-preview").src = this.init;
    this.canvas.width = image.naturalWidth;
    this.canvas.height = image.naturalHeight;
    this.clearMask();
    $("mask-editor").hidden = false;
    this.onSize(image.naturalWidth, image.naturalHeight);
  }

  async loadMask() {
    const file = $("mask_image").files[0];
    this.maskFile = file ? await readDataUrl(file) : null;
    if (!this.maskFile || !this.init) return;
    const image = await loadImage(this.maskFile).catch(() => null);
    if (!image) return;
    this.context.drawImage(image, 0, 0, this.canvas.width, this.canvas.height);
    this.painted = true;
  }

  clearMask() {
    this.context.fillStyle = "#000";
    this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = false;
  }

  remove() {
    this.init = null;
    this.painted = false;
    $("init_image").value = "";
    $("init-preview").removeAttribute("src");
    $("mask-editor").hidden = true;
  }

  bindPainting() {
    let last = null; // the previous point of the stroke, joined to the next by a line
    const paint = (event) => {
      const box = this.canvas.getBoundingClientRect();
      const x = ((event.clientX - box.left) * this.canvas.width) / box.width;
      const y = ((event.clientY - box.top) * this.canvas.height) / box.height;
      const width = Math.max(1, (Number($("brush").value) * this.canvas.width) / 128);
      Object.assign(this.context, { strokeStyle: "#fff", lineWidth: width, lineCap: "round", lineJoin: "round" });
      this.context.beginPath();
      this.context.moveTo(last?.x ?? x, last?.y ?? y);
      this.context.lineTo(x, y);
      this.context.stroke();
      last = { x, y };
      this.painted = true;
    };
    this.canvas.addEventListener("pointerdown", (event) => {
      last = null;
      this.canvas.setPointerCapture(event.pointerId);
      paint(event);
    });
    this.canvas.addEventListener("pointermove", (event) => {
      if (this.canvas.hasPointerCapture(event.pointerId)) paint(event);
    });
    const stop = () => (last = null);
    this.canvas.addEventListener("pointerup", stop);
    this.canvas.addEventListener("pointercancel", stop);
  }

  /** The request fields for the images: init_image and mask_image (data URLs), when given. */
  fields() {
    const fields = {};
    if (this.init) fields.init_image = this.init;
    if (this.init && this.painted) fields.mask_image = this.canvas.toDataURL("image/png");
    else if (this.maskFile) fields.mask_image = this.maskFile;
    return fields;
  }
}
