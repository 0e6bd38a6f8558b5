// The canvas viewport: draws raw DICOM frames (Explicit VR Little Endian, fetched through the platform's
// DICOMweb proxy) with the modality LUT, the VOI window (PS3.3 C.11.2.1.2), MONOCHROME1 inversion,
// palettes and RGB; zoom, pan, window drag, slice scrolling, background loading, and AI overlays drawn
// in image space. DICOM strings are hostile: they only ever reach the page through textContent.

export const FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';
const IN_FLIGHT = 6; // frame requests at a time while a series loads (a browser's connections per host)
const ZOOM_STEP = 1.25;

// Window presets per modality (centre, width in modality units), keys 1-4.
export const PRESETS = {
  CT: [
    { name: "Lung", center: -600, width: 1500 },
    { name: "Mediastinum", center: 40, width: 400 },
    { name: "Bone", center: 400, width: 1800 },
    { name: "Brain", center: 40, width: 80 },
  ],
};

// ---- frame bytes ---------------------------------------------------------------------------------------

/** The parts of a multipart/related body (RFC 2046), as Uint8Array views without their headers. */
export function parseMultipart(contentType, buffer) {
  const match = /boundary="?([^";]+)"?/i.exec(contentType || "");
  if (!match) throw new Error("no multipart boundary");
  const bytes = new Uint8Array(buffer);
  const delimiter = new TextEncoder().encode(`--${match[1]}`);
  const starts = [];
  for (let i = indexOf(bytes, delimiter, 0); i >= 0; i = indexOf(bytes, delimiter, i + delimiter.length)) starts.push(i);
  const parts = [];
  for (let k = 0; k + 1 < starts.length; k++) {
    const from = starts[k] + delimiter.length;
    const headerEnd = indexOf(bytes, new Uint8Array([13, 10, 13, 10]), from);
    if (headerEnd < 0 || headerEnd > starts[k + 1]) throw new Error("malformed multipart part");
    parts.push(bytes.subarray(headerEnd + 4, starts[k + 1] - 2)); // the CRLF before the delimiter
  }
  return parts;
}

/** Parts of a multipart/related body as its bytes arrive: ``onPart(headers, body)`` for each whole part. */
class MultipartStream {
  constructor(boundary, onPart) {
    this.delimiter = new TextEncoder().encode(`--${boundary}`);
    this.onPart = onPart;
    this.buffer = new Uint8Array(1 << 20);
    this.length = 0;
    this.searched = 0; // bytes already searched for the next delimiter: never searched twice
  }

  push(chunk) {
    if (this.length + chunk.length > this.buffer.length) {
      const grown = new Uint8Array(Math.max(this.buffer.length * 2, this.length + chunk.length));
      grown.set(this.buffer.subarray(0, this.length));
      this.buffer = grown;
    }
    this.buffer.set(chunk, this.length);
    this.length += chunk.length;
    this._drain();
  }

  _drain() {
    const size = this.delimiter.length;
    for (;;) {
      const bytes = this.buffer.subarray(0, this.length);
      const start = indexOf(bytes, this.delimiter, 0); // the buffer begins with a part's delimiter
      if (start < 0) return;
      const next = indexOf(bytes, this.delimiter, Math.max(start + size, this.searched - size));
      if (next < 0) {
        this.searched = this.length;
        return;
      }
      const headerEnd = indexOf(bytes, new Uint8Array([13, 10, 13, 10]), start + size);
      if (headerEnd >= 0 && headerEnd < next) {
        this.onPart(new TextDecoder().decode(bytes.subarray(start + size, headerEnd)), bytes.subarray(headerEnd + 4, next - 2));
      }
      this.buffer.copyWithin(0, next, this.length);
      this.length -= next;
      this.searched = 0;
    }
  }
}

function indexOf(bytes, pattern, from) {
  const first = pattern[0];
  outer: for (let i = bytes.indexOf(first, from); i >= 0 && i <= bytes.length - pattern.length; i = bytes.indexOf(first, i + 1)) {
    for (let j = 1; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

/** A frame's stored values as a typed array (copied, so that it is aligned and owns its memory). */
export function storedValues(part, image) {
  const copy = part.slice().buffer;
  if (image.bits_allocated === 8) return new Uint8Array(copy);
  if (image.bits_allocated === 16) return new Uint16Array(copy, 0, copy.byteLength >> 1);
  if (image.bits_allocated === 32) return new Uint32Array(copy, 0, copy.byteLength >> 2);
  throw new Error(`unsupported Bits Allocated ${image.bits_allocated}`);
}

// ---- grey levels ---------------------------------------------------------------------------------------

/** Stored value (as read, bits above Bits Stored possibly set) to its signed or unsigned value. */
export function storedToValue(raw, image) {
  const bits = image.bits_stored;
  const value = bits >= 32 ? raw >>> 0 : raw & (2 ** bits - 1);
  return image.pixel_representation === 1 && value >= 2 ** (bits - 1) ? value - 2 ** bits : value;
}

/** The VOI function of PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID), output 0..255. */
export function voi(x, center, width, fn = "LINEAR") {
  if (fn === "SIGMOID") return 255 / (1 + Math.exp((-4 * (x - center)) / width));
  if (fn === "LINEAR_EXACT") {
    if (x <= center - width / 2) return 0;
    if (x > center + width / 2) return 255;
    return ((x - center) / width + 0.5) * 255;
  }
  const w = Math.max(width, 1);
  if (x <= center - 0.5 - (w - 1) / 2) return 0;
  if (x > center - 0.5 + (w - 1) / 2) return 255;
  return ((x - (center - 0.5)) / (w - 1) + 0.5) * 255;
}

/** Stored value -> displayed grey (0..255): mask and sign, modality LUT, window, MONOCHROME1 inversion. */
export function greyLevel(raw, image, window) {
  const modality = storedToValue(raw, image) * image.rescale_slope + image.rescale_intercept;
  const grey = voi(modality, window.center, window.width, image.voi_lut_function);
  return Math.round(image.photometric === "MONOCHROME1" ? 255 - grey : grey);
}

/** A table from every possible stored word (8 or 16 bits) to its grey: one lookup per pixel. */
function greyTable(image, window) {
  const size = 2 ** image.bits_allocated;
  const table = new Uint8Array(size);
  for (let raw = 0; raw < size; raw++) table[raw] = greyLevel(raw, image, window);
  return table;
}

function paletteTable(image) {
  const size = 2 ** image.bits_allocated;
  const channels = ["red", "green", "blue"].map((name) => {
    const lut = image.palette[name];
    const shift = lut.bits > 8 ? lut.bits - 8 : 0;
    const table = new Uint8Array(size);
    for (let raw = 0; raw < size; raw++) {
      const value = storedToValue(raw, image);
      const index = Math.min(Math.max(value - lut.first_mapped, 0), lut.values.length - 1);
      table[raw] = lut.values[index] >> shift;
    }
    return table;
  });
  return channels;
}

/** The value range a frame's stored values can take, in modality units: the window when the file has none. */
function valueRange(values, image) {
  let low = Infinity;
  let high = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = storedToValue(values[i], image);
    if (v < low) low = v;
    if (v > high) high = v;
  }
  const a = low * image.rescale_slope + image.rescale_intercept;
  const b = high * image.rescale_slope + image.rescale_intercept;
  return { low: Math.min(a, b), high: Math.max(a, b) };
}

/** The window a frame opens with: the file's first; without one, PS3.3 C.11.2's default, identity, for
 * values stored in 8 bits or fewer (a stretch would show a low-contrast photograph or PNG-derived radiograph
 * unlike its source, and unlike what a model reads: inference/runtime/pixels.py does the same); deeper
 * values are stretched over the frame's own range, as most viewers do (identity would show a 12-bit
 * radiograph almost black). */
export function initialWindow(image, values) {
  if (image.windows.length) return { ...image.windows[0] };
  if (image.samples_per_pixel === 3 || image.photometric === "PALETTE COLOR") return { center: 127.5, width: 256 };
  if (image.bits_stored <= 8) return identityWindow(image);
  const { low, high } = valueRange(values, image);
  return { center: (low + high) / 2, width: Math.max(high - low, 1) };
}

/** The LINEAR window that shows every value Bits Stored can hold as it is: for unsigned 8 bits centre 128,
 * width 256 (not 127.5: LINEAR's "c - 0.5" makes that x + 0.5, one grey too bright once rounded). In
 * modality units, through the rescale; a negative slope still shows higher modality values brighter. */
function identityWindow(image) {
  const bits = image.bits_stored;
  const first = image.pixel_representation === 1 ? -(2 ** (bits - 1)) : 0;
  const a = first * image.rescale_slope + image.rescale_intercept;
  const b = (first + 2 ** bits - 1) * image.rescale_slope + image.rescale_intercept;
  const low = Math.min(a, b);
  const high = Math.max(a, b);
  return { center: (low + high) / 2 + 0.5, width: high - low + 1 };
}

/** Fill `rgba` (ImageData.data) with one frame. */
export function renderFrame(values, image, window, rgba, tables) {
  const pixels = image.rows * image.columns;
  if (image.samples_per_pixel === 3) {
    const planar = image.planar_configuration === 1;
    for (let i = 0, o = 0; i < pixels; i++, o += 4) {
      rgba[o] = planar ? values[i] : values[3 * i];
      rgba[o + 1] = planar ? values[pixels + i] : values[3 * i + 1];
      rgba[o + 2] = planar ? values[2 * pixels + i] : values[3 * i + 2];
      rgba[o + 3] = 255;
    }
    return;
  }
  if (image.photometric === "PALETTE COLOR" && image.palette) {
    const [r, g, b] = tables.palette || (tables.palette = paletteTable(image));
    for (let i = 0, o = 0; i < pixels; i++, o += 4) {
      const v = values[i];
      rgba[o] = r[v];
      rgba[o + 1] = g[v];
      rgba[o + 2] = b[v];
      rgba[o + 3] = 255;
    }
    return;
  }
  if (image.bits_allocated <= 16) {
    const key = `${image.bits_allocated}/${image.bits_stored}/${image.pixel_representation}/${image.rescale_slope}/${image.rescale_intercept}/${image.voi_lut_function}/${image.photometric}/${window.center}/${window.width}`;
    if (tables.greyKey !== key) {
      tables.grey = greyTable(image, window);
      tables.greyKey = key;
    }
    const table = tables.grey;
    for (let i = 0, o = 0; i < pixels; i++, o += 4) {
      const grey = table[values[i]];
      rgba[o] = grey;
      rgba[o + 1] = grey;
      rgba[o + 2] = grey;
      rgba[o + 3] = 255;
    }
    return;
  }
  for (let i = 0, o = 0; i < pixels; i++, o += 4) {
    const grey = greyLevel(values[i], image, window);
    rgba[o] = grey;
    rgba[o + 1] = grey;
    rgba[o + 2] = grey;
    rgba[o + 3] = 255;
  }
}

// ---- the viewport --------------------------------------------------------------------------------------

/** One entry per frame, in display order. */
function slicesOf(description) {
  return description.images.flatMap((image) => Array.from({ length: image.frames }, (_, i) => ({ image, frame: i + 1 })));
}

export class Viewport extends EventTarget {
  /** @param {HTMLElement} element the viewport section: a stage (the canvas and the info corners) above the
   * tool buttons */
  constructor(element, studyUid) {
    super();
    this.element = element;
    this.studyUid = studyUid;
    this.canvas = element.querySelector("canvas");
    // The canvas fills its stage, which ends where the toolbar begins: no part of the image under the tools.
    this.stage = this.canvas.parentElement;
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });
    this.offscreen = document.createElement("canvas");
    this.series = null;
    this.slices = []; // [{image, frame}] in display order, one per frame
    this.index = 0;
    this.frames = new Map(); // `${uid}/${frame}` -> stored values
    this.pending = new Map();
    this.tables = {};
    this.view = { zoom: 1, x: 0, y: 0, fitted: true };
    this._window = null;
    this.overlays = [];
    this.hidden = new Set();
    this.overlayOpacity = 0.5;
    this.highlighted = null;
    this.overlayImages = new Map();
    this.overlayPlanes = new Map(); // SOP Instance UID -> its overlay planes (60xx), see overlay_planes.py
    this.planeImages = new Map(); // PNG URL -> Image
    // On by default: an outline or marker stored as an overlay plane is part of the image the reader must see.
    this.planesShown = true;
    this.timing = { first_image_ms: null, all_loaded_ms: null };
    this.drawn = null;
    this._listen();
    new ResizeObserver(() => this._resize()).observe(this.stage);
    this._resize();
  }

  get window() {
    return this._window ? { center: this._window.center, width: this._window.width } : null;
  }

  get current() {
    return this.slices[this.index] || null;
  }

  stats() {
    return {
      frames_loaded: this.slices.filter((s) => this.frames.has(key(s))).length,
      frames_total: this.slices.length,
      complete: Boolean(this.series && this.series.complete !== false), // false: only the first image known yet
      first_image_ms: this.timing.first_image_ms,
      all_loaded_ms: this.timing.all_loaded_ms,
    };
  }

  /** Show a series: its description first, then the current frame, then every other frame nearest first. */
  /** ``first``: the series' first image's description when the page already has it (see images.py). */
  async loadSeries(seriesUid, first = null) {
    if (this.abort) this.abort.abort();
    this.abort = new AbortController();
    const signal = this.abort.signal;
    const url = `/api/studies/${this.studyUid}/series/${seriesUid}/images`;
    const describe = async (query) => {
      const response = await fetch(url + query, { signal, headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`series description: HTTP ${response.status}`);
      return response.json();
    };
    // The first image's description comes from the archive's index in milliseconds; the whole series'
    // needs every file read. Draw the first image as soon as it can be, then take in the rest.
    // Asked one after the other: parsing the whole series' description would hold up the first.
    const given = first && first.series_uid === seriesUid ? first : null;
    const quick = given || (await describe("?first=true").catch(() => null)) || (await describe(""));
    this._useDescription(quick);
    this._loadOverlayPlanes(seriesUid, signal); // not awaited: the first image comes first
    await this.show(0); // the rest of the description only then: its work on the server would delay this frame
    // The rest of the description (every file read by the archive) and the frames (already on their way to
    // the platform's cache since the page named the series) are asked for together; a frame that comes
    // before its slice is described waits, as bytes, for the description.
    const rest = quick.complete ? null : describe("");
    const bulk = this._loadSeriesBulk(signal).catch((error) => {
      if (error.name !== "AbortError") console.warn(`series bulk data: ${error.message}; loading frame by frame`);
    });
    if (rest) this._takeRest(await rest);
    await bulk;
    this._prefetch(signal); // whatever the bulk answer lacked, and every frame if it failed
  }

  _useDescription(body) {
    this.series = body;
    this.slices = slicesOf(body);
    this.sliceByKey = new Map(this.slices.map((slice) => [key(slice), slice]));
    this.frames = new Map();
    this.undescribed = new Map(); // frames (bytes as served) whose slice the description has not named yet
    this.pending = new Map();
    this.tables = {};
    this.overlayPlanes = new Map();
    this.planeImages = new Map();
    this.index = 0;
    this._window = null;
    this.timing = { first_image_ms: null, all_loaded_ms: null };
    this.view.fitted = true;
    this._showPresets();
    this._writeInfo();
  }

  /** The full description after the first image's: same slice on screen, frames and window kept. */
  _takeRest(body) {
    const current = this.current;
    this.series = body;
    this.slices = slicesOf(body);
    this.sliceByKey = new Map(this.slices.map((slice) => [key(slice), slice]));
    for (const slice of this.slices) {
      const bytes = this.undescribed.get(key(slice));
      if (bytes && !this.frames.has(key(slice))) this.frames.set(key(slice), storedValues(bytes, slice.image));
    }
    this.undescribed.clear();
    const index = current ? this.slices.findIndex((s) => s.image.instance_uid === current.image.instance_uid && s.frame === current.frame) : -1;
    this.index = Math.max(index, 0);
    this._writeInfo();
    this._noteLoaded();
  }

  /** Go to a slice (0-based index in display order). */
  async show(index) {
    if (!this.slices.length) return;
    this.index = Math.min(Math.max(index, 0), this.slices.length - 1);
    const slice = this.current;
    this._writeInfo();
    const values = this.frames.get(key(slice)) || (await this._load(slice, this.abort && this.abort.signal));
    if (!values || !this.current || key(slice) !== key(this.current)) return; // the reader moved on meanwhile
    if (!this._window) this._window = this._initialWindow(slice.image, values);
    this._draw();
    if (this.timing.first_image_ms === null) this.timing.first_image_ms = performance.now();
    this.dispatchEvent(new CustomEvent("image-changed"));
    document.dispatchEvent(
      new CustomEvent("openaim:image-changed", {
        detail: { instance_uid: slice.image.instance_uid, frame: slice.frame, index: this.index, count: this.slices.length },
      }),
    );
  }

  goTo(instanceUid, frame = 1) {
    const index = this.slices.findIndex((s) => s.image.instance_uid === instanceUid && s.frame === frame);
    if (index >= 0) return this.show(index);
    return Promise.resolve();
  }

  scroll(delta) {
    return this.show(this.index + delta);
  }

  setWindow(center, width) {
    this._window = { center, width: Math.max(width, 1) };
    this._draw();
  }

  zoomBy(factor, around) {
    const rect = this.canvas;
    const cx = around ? around.x : rect.width / 2;
    const cy = around ? around.y : rect.height / 2;
    const zoom = Math.min(Math.max(this.view.zoom * factor, 0.05), 40);
    this.view.x = cx - ((cx - this.view.x) * zoom) / this.view.zoom;
    this.view.y = cy - ((cy - this.view.y) * zoom) / this.view.zoom;
    this.view.zoom = zoom;
    this.view.fitted = false;
    this._draw();
  }

  fit() {
    this.view.fitted = true;
    this._draw();
  }

  oneToOne() {
    const image = this.current && this.current.image;
    if (!image) return;
    this.view = {
      zoom: 1,
      x: Math.round((this.canvas.width - image.columns) / 2),
      y: Math.round((this.canvas.height - image.rows) / 2),
      fitted: false,
    };
    this._draw();
  }

  reset() {
    const slice = this.current;
    const values = slice && this.frames.get(key(slice));
    if (values) this._window = this._initialWindow(slice.image, values);
    this.fit();
  }

  /** Canvas pixel for an image pixel's centre (tests and overlays). */
  imageToCanvas(x, y) {
    return { x: this.view.x + x * this.view.zoom, y: this.view.y + y * this.view.zoom };
  }

  // ---- overlays (AI results) ----

  setOverlays(list) {
    this.overlays = Array.isArray(list) ? list.slice() : [];
    for (const overlay of this.overlays) {
      if ((overlay.kind === "heatmap" || overlay.kind === "mask") && overlay.image_url && !this.overlayImages.has(overlay.image_url)) {
        const picture = new Image();
        picture.addEventListener("load", () => this._draw());
        picture.src = overlay.image_url;
        this.overlayImages.set(overlay.image_url, picture);
      }
    }
    this._draw();
  }

  setOverlayVisible(id, visible) {
    if (visible) this.hidden.delete(id);
    else this.hidden.add(id);
    this._draw();
  }

  setAllOverlaysVisible(visible) {
    this.hidden = visible ? new Set() : new Set(this.overlays.map((o) => o.id));
    this._draw();
  }

  setOverlayOpacity(opacity) {
    this.overlayOpacity = Math.min(Math.max(Number(opacity) || 0, 0), 1);
    this._draw();
  }

  highlight(id) {
    this.highlighted = id;
    this._draw();
  }

  // ---- overlay planes (60xx, stored in the image's own file) ----

  toggleOverlayPlanes() {
    this.planesShown = !this.planesShown;
    this._writeInfo();
    this._draw();
  }

  /** Which instances and frames carry planes: one request per series, answered after the first image. */
  async _loadOverlayPlanes(seriesUid, signal) {
    const url = `/api/studies/${this.studyUid}/series/${seriesUid}/overlay-planes`;
    try {
      const response = await fetch(url, { signal, headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const planes = await response.json();
      if (!this.series || this.series.series_uid !== seriesUid) return; // another series meanwhile
      this.overlayPlanes = new Map(Object.entries(planes));
      this._writeInfo();
      this._draw();
    } catch (error) {
      if (error.name !== "AbortError") console.warn(`overlay planes: ${error.message}`);
    }
  }

  /** The planes over one frame: [{group, url, ...}]. */
  _planesOf(slice) {
    const planes = (slice && this.overlayPlanes.get(slice.image.instance_uid)) || [];
    const base = `/api/studies/${this.studyUid}/series/${this.series.series_uid}/instances/${slice && slice.image.instance_uid}`;
    return planes
      .filter((plane) => plane.frames.includes(slice.frame))
      .map((plane) => ({ ...plane, url: `${base}/overlays/${plane.group}/${slice.frame}.png` }));
  }

  // ---- loading ----

  async _load(slice, signal) {
    const id = key(slice);
    if (this.pending.has(id)) return this.pending.get(id);
    const { image, frame } = slice;
    const url = `/dicomweb/studies/${this.studyUid}/series/${this.series.series_uid}/instances/${image.instance_uid}/frames/${frame}`;
    const promise = fetch(url, { signal, headers: { Accept: FRAME_ACCEPT } })
      .then(async (response) => {
        if (!response.ok) throw new Error(`frame ${frame} of ${image.instance_uid}: HTTP ${response.status}`);
        const [part] = parseMultipart(response.headers.get("content-type"), await response.arrayBuffer());
        const values = storedValues(part, image);
        this.frames.set(id, values);
        this._noteLoaded();
        return values;
      })
      .catch((error) => {
        if (error.name !== "AbortError") this._status(`Could not load an image: ${error.message}`);
        return null;
      })
      .finally(() => this.pending.delete(id));
    this.pending.set(id, promise);
    return promise;
  }

  /** The whole series in one streamed answer (WADO-RS series bulk data), each frame kept as it arrives. */
  async _loadSeriesBulk(signal) {
    const missing = this.slices.filter((slice) => !this.frames.has(key(slice)) && !this.pending.has(key(slice)));
    if (this.series.complete !== false && missing.length < 2) return;
    const response = await fetch(`/dicomweb/studies/${this.studyUid}/series/${this.series.series_uid}`, { signal, headers: { Accept: FRAME_ACCEPT } });
    const boundary = /boundary="?([^";]+)"?/i.exec(response.headers.get("content-type") || "");
    if (!response.ok || !response.body || !boundary) throw new Error(`HTTP ${response.status}`);
    const stream = new MultipartStream(boundary[1], (headers, body) => {
      const named = /\/instances\/([0-9.]+)\/frames\/([0-9]+)/.exec(headers);
      if (!named) return;
      const slice = this.sliceByKey.get(`${named[1]}/${named[2]}`);
      if (!slice) {
        // Described later; a copy, since the stream reuses its buffer.
        if (this.series.complete === false) this.undescribed.set(`${named[1]}/${named[2]}`, body.slice());
        return;
      }
      if (this.frames.has(key(slice))) return;
      this.frames.set(key(slice), storedValues(body, slice.image));
      this._noteLoaded();
      if (slice === this.current && this.timing.first_image_ms === null) this.show(this.index);
    });
    const reader = response.body.getReader();
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) stream.push(chunk.value);
  }

  async _prefetch(signal) {
    const order = this.slices
      .map((slice, index) => ({ slice, distance: Math.abs(index - this.index) }))
      .sort((a, b) => a.distance - b.distance)
      .map((item) => item.slice);
    let next = 0;
    const worker = async () => {
      while (next < order.length && !signal.aborted) {
        const slice = order[next++];
        if (!this.frames.has(key(slice))) await this._load(slice, signal);
      }
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  }

  _noteLoaded() {
    const { frames_loaded, frames_total, complete } = this.stats();
    if (complete && frames_loaded === frames_total && this.timing.all_loaded_ms === null) this.timing.all_loaded_ms = performance.now();
    this._setInfo("loading", frames_loaded < frames_total ? `Loading ${frames_loaded}/${frames_total}` : "");
  }

  _initialWindow(image, values) {
    return initialWindow(image, values);
  }

  // ---- drawing ----

  _resize() {
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(this.stage.clientWidth * ratio));
    this.canvas.height = Math.max(1, Math.round(this.stage.clientHeight * ratio));
    this._draw();
  }

  _fitView(image) {
    const zoom = Math.min(this.canvas.width / image.columns, this.canvas.height / image.rows);
    this.view = {
      zoom,
      x: Math.round((this.canvas.width - image.columns * zoom) / 2),
      y: Math.round((this.canvas.height - image.rows * zoom) / 2),
      fitted: true,
    };
  }

  _draw() {
    const slice = this.current;
    const ctx = this.context;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const values = slice && this.frames.get(key(slice));
    if (!values || !this._window) return;
    const image = slice.image;
    if (this.view.fitted) this._fitView(image);
    if (this.drawn !== values || this.drawnWindow !== `${this._window.center}/${this._window.width}`) {
      this.offscreen.width = image.columns;
      this.offscreen.height = image.rows;
      const octx = this.offscreen.getContext("2d");
      const data = octx.createImageData(image.columns, image.rows);
      renderFrame(values, image, this._window, data.data, this.tables);
      octx.putImageData(data, 0, 0);
      this.drawn = values;
      this.drawnWindow = `${this._window.center}/${this._window.width}`;
    }
    ctx.imageSmoothingEnabled = this.view.zoom < 1;
    ctx.setTransform(this.view.zoom, 0, 0, this.view.zoom, this.view.x, this.view.y);
    ctx.drawImage(this.offscreen, 0, 0);
    this._drawOverlayPlanes(slice);
    this._drawOverlays(slice);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    this._setInfo("window", `C ${round(this._window.center)} / W ${round(this._window.width)}`);
    this._setInfo("zoom", `Zoom ${Math.round(this.view.zoom * 100)}%`);
  }

  /** Each plane's PNG is the image's size (origin applied on the server): drawn over the image, crisp. */
  _drawOverlayPlanes(slice) {
    if (!this.planesShown) return;
    const ctx = this.context;
    for (const plane of this._planesOf(slice)) {
      let picture = this.planeImages.get(plane.url);
      if (!picture) {
        picture = new Image();
        picture.addEventListener("load", () => this._draw());
        picture.src = plane.url;
        this.planeImages.set(plane.url, picture);
      }
      if (!picture.complete || !picture.naturalWidth) continue;
      ctx.save();
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(picture, 0, 0, slice.image.columns, slice.image.rows);
      ctx.restore();
    }
  }

  _drawOverlays(slice) {
    const ctx = this.context;
    const zoom = this.view.zoom;
    for (const overlay of this.overlays) {
      if (this.hidden.has(overlay.id)) continue;
      if (overlay.instance_uid !== slice.image.instance_uid || (overlay.frame || 1) !== slice.frame) continue;
      const lit = overlay.id === this.highlighted;
      ctx.save();
      ctx.strokeStyle = overlay.colour || "#ffd54a";
      ctx.fillStyle = ctx.strokeStyle;
      ctx.lineWidth = (lit ? 4 : 2) / zoom;
      if (lit) {
        ctx.shadowColor = "#fff";
        ctx.shadowBlur = 6;
      }
      let anchor = null;
      if ((overlay.kind === "heatmap" || overlay.kind === "mask") && overlay.region) {
        const picture = this.overlayImages.get(overlay.image_url);
        const [x0, y0, x1, y1] = overlay.region;
        if (picture && picture.complete && picture.naturalWidth) {
          ctx.globalAlpha = this.overlayOpacity;
          // A heatmap is a coarse map of a smooth quantity; a mask labels exact pixels: keep them crisp.
          ctx.imageSmoothingEnabled = overlay.kind === "heatmap";
          ctx.drawImage(picture, x0, y0, x1 - x0, y1 - y0);
          ctx.globalAlpha = 1;
        }
        if (lit) ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
        anchor = [x0, y0];
      } else if (overlay.kind === "box" && overlay.rect) {
        const [x0, y0, x1, y1] = overlay.rect;
        ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
        anchor = [x0, y0];
      } else if (overlay.kind === "polyline" && overlay.points && overlay.points.length) {
        ctx.beginPath();
        overlay.points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        if (overlay.closed) ctx.closePath();
        ctx.stroke();
        anchor = overlay.points[0];
      } else if (overlay.kind === "ellipse" && overlay.points && overlay.points.length === 4) {
        const [[ax, ay], [bx, by], [cx, cy], [dx, dy]] = overlay.points; // major axis ends, then minor
        ctx.beginPath();
        ctx.ellipse((ax + bx) / 2, (ay + by) / 2, Math.hypot(bx - ax, by - ay) / 2, Math.hypot(dx - cx, dy - cy) / 2, Math.atan2(by - ay, bx - ax), 0, 2 * Math.PI);
        ctx.stroke();
        anchor = [Math.min(ax, bx, cx, dx), Math.min(ay, by, cy, dy)];
      } else if (overlay.kind === "point" && overlay.point) {
        const [x, y] = overlay.point;
        const r = 6 / zoom;
        ctx.beginPath();
        ctx.moveTo(x - r, y);
        ctx.lineTo(x + r, y);
        ctx.moveTo(x, y - r);
        ctx.lineTo(x, y + r);
        ctx.stroke();
        anchor = [x + r, y - r];
      }
      if (anchor && overlay.label) {
        ctx.shadowBlur = 0;
        ctx.font = `${(lit ? 15 : 13) / zoom}px system-ui, sans-serif`;
        ctx.textBaseline = "bottom";
        ctx.fillText(String(overlay.label), anchor[0], anchor[1] - 3 / zoom);
      }
      ctx.restore();
    }
  }

  // ---- information overlay (textContent only) ----

  _setInfo(field, text) {
    const target = this.element.querySelector(`[data-info="${field}"]`);
    if (target && target.textContent !== text) target.textContent = text;
  }

  _writeInfo() {
    if (!this.series) return;
    const info = this.series.info;
    this._setInfo("patient_name", info.patient_name);
    this._setInfo("patient_id", info.patient_id);
    this._setInfo("study", [info.study_date, info.study_description].filter(Boolean).join(" · "));
    this._setInfo("series", [info.series_number && `Series ${info.series_number}`, info.series_description].filter(Boolean).join(" · "));
    this._setInfo("modality", info.modality);
    const slice = this.current;
    const frameText = slice && slice.image.frames > 1 ? ` (frame ${slice.frame}/${slice.image.frames})` : "";
    this._setInfo("slice", slice ? `Image ${this.index + 1}/${this.slices.length}${frameText}` : "");
    const planes = slice ? this._planesOf(slice).length : 0;
    const planesText = planes === 1 ? "Overlay" : `Overlays ${planes}`;
    this._setInfo("overlay_planes", planes ? `${planesText}${this.planesShown ? "" : " (hidden, G shows)"}` : "");
  }

  _status(text) {
    this._setInfo("loading", text);
  }

  _showPresets() {
    const holder = this.element.querySelector(".presets");
    if (!holder) return;
    holder.replaceChildren();
    (PRESETS[this.series.modality] || []).forEach((preset, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `${i + 1} ${preset.name}`;
      button.addEventListener("click", () => this.setWindow(preset.center, preset.width));
      holder.append(button);
    });
  }

  // ---- input ----

  _listen() {
    const element = this.element;
    element.addEventListener("wheel", (event) => this._wheel(event), { passive: false });
    document.addEventListener("keydown", (event) => {
      if (!isTyping(event.target)) this._key(event);
    });
    this.canvas.addEventListener("pointerdown", (event) => this._drag(event));
    this.canvas.addEventListener("contextmenu", (event) => event.preventDefault());
    for (const button of element.querySelectorAll("[data-action]")) {
      button.addEventListener("click", () => {
        const action = button.dataset.action;
        if (action === "fit") this.fit();
        else if (action === "one-to-one") this.oneToOne();
        else if (action === "reset") this.reset();
        element.focus();
      });
    }
  }

  _wheel(event) {
    event.preventDefault();
    if (event.ctrlKey) {
      const box = this.canvas.getBoundingClientRect();
      const ratio = this.canvas.width / box.width;
      this.zoomBy(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, { x: (event.clientX - box.left) * ratio, y: (event.clientY - box.top) * ratio });
    } else if (event.deltaY) {
      this.scroll(event.deltaY > 0 ? 1 : -1);
    }
  }

  _key(event) {
    if (event.altKey || event.metaKey || (event.ctrlKey && !["+", "-", "="].includes(event.key))) return;
    const page = Math.max(1, Math.round(this.slices.length / 10));
    const actions = {
      ArrowDown: () => this.scroll(1),
      ArrowRight: () => this.scroll(1),
      ArrowUp: () => this.scroll(-1),
      ArrowLeft: () => this.scroll(-1),
      PageDown: () => this.scroll(page),
      PageUp: () => this.scroll(-page),
      Home: () => this.show(0),
      End: () => this.show(this.slices.length - 1),
      "+": () => this.zoomBy(ZOOM_STEP),
      "=": () => this.zoomBy(ZOOM_STEP),
      "-": () => this.zoomBy(1 / ZOOM_STEP),
      f: () => this.fit(),
      g: () => this.toggleOverlayPlanes(),
      o: () => this.oneToOne(),
      r: () => this.reset(),
    };
    const preset = this.series && (PRESETS[this.series.modality] || [])[Number(event.key) - 1];
    const action = actions[event.key] || (preset && (() => this.setWindow(preset.center, preset.width)));
    if (!action) return;
    event.preventDefault();
    action();
  }

  /** Left drag: window (right = wider, down = higher centre). Middle/right drag or shift: pan. */
  _drag(event) {
    if (!this._window) return;
    event.preventDefault();
    this.element.focus();
    const pan = event.button === 1 || event.button === 2 || event.shiftKey;
    const start = { x: event.clientX, y: event.clientY, view: { ...this.view }, window: { ...this._window } };
    const box = this.canvas.getBoundingClientRect();
    const ratio = this.canvas.width / box.width;
    const step = windowStep(start.window.width);
    this.canvas.setPointerCapture(event.pointerId);
    const move = (e) => {
      const dx = e.clientX - start.x;
      const dy = e.clientY - start.y;
      if (pan) {
        this.view = { ...start.view, x: start.view.x + dx * ratio, y: start.view.y + dy * ratio, fitted: false };
        this._draw();
      } else {
        this.setWindow(start.window.center + dy * step, start.window.width + dx * step);
      }
    };
    const up = () => {
      this.canvas.removeEventListener("pointermove", move);
      this.canvas.removeEventListener("pointerup", up);
      this.canvas.removeEventListener("pointercancel", up);
    };
    this.canvas.addEventListener("pointermove", move);
    this.canvas.addEventListener("pointerup", up);
    this.canvas.addEventListener("pointercancel", up);
  }
}

/** Modality units per screen pixel of window drag: fine for narrow windows, fast for wide ones. */
export function windowStep(width) {
  return Math.max(width / 256, 1 / 16);
}

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  if (target.isContentEditable || ["TEXTAREA", "SELECT"].includes(target.tagName)) return true;
  return target.tagName === "INPUT" && !["checkbox", "radio", "range", "button"].includes(target.type);
}

function key(slice) {
  return `${slice.image.instance_uid}/${slice.frame}`;
}

function round(value) {
  return Math.abs(value) >= 100 ? Math.round(value) : Math.round(value * 10) / 10;
}
