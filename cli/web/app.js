// The live page of kvm-ts (`--web`): plain SVG and canvas, no library, every byte served by the
// product. It talks to the machine over one WebSocket: commands ({id, execute, arguments}) and
// the replies to them, plus pushes (map changes with their timeline, serial output, run events).

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const KVM_MEM_LOG_DIRTY_PAGES = 1;
const KVM_MEM_READONLY = 2;
const POLL_MS = 500;
/** Pixels the heatmap of a region may take across. */
const HEAT_WIDTH = 512;
const LANE = 20;
const GAP = 3;
const GUTTER = 86;
const KIND_COLORS = {
  ram: "#3fb950",
  rom: "#d29922",
  romd: "#db6d28",
  "i/o": "#a371f7",
  container: "#2d333b",
  reservation: "#484f58",
};

const state = {
  machine: null,
  map: null,
  memslots: [],
  keys: new Set(),
  fresh: new Set(),
  scale: "compressed",
  views: new Map(), // bar id -> {lo, hi} (BigInt)
  timeline: [],
  lastVcpus: null,
  heat: new Map(),
  dirtyOn: false,
  status: null,
};

// ---------------------------------------------------------------- connection

let socket;
let nextId = 1;
const pending = new Map();

function connect() {
  socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.onopen = () => {
    $("conn").classList.add("up");
    start().catch((e) => console.error(e));
  };
  socket.onclose = () => {
    $("conn").classList.remove("up");
    setStatus("gone");
    for (const { reject } of pending.values()) reject(new Error("disconnected"));
    pending.clear();
  };
  socket.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.push) return onPush(msg.push, msg.data);
    const waiter = pending.get(msg.id);
    if (!waiter) return;
    pending.delete(msg.id);
    if (msg.error) waiter.reject(new Error(msg.error.desc));
    else waiter.resolve(msg.return);
  };
}

function call(execute, args = {}) {
  return new Promise((resolve, reject) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return reject(new Error("not connected"));
    const id = nextId++;
    pending.set(id, { resolve, reject });
    socket.send(JSON.stringify({ id, execute, arguments: args }));
  });
}

async function start() {
  state.machine = await call("x-query-machine");
  const running = state.machine.cpus > 0;
  for (const id of ["controls", "vcpu-section", "serial-section", "dirty-section"]) {
    $(id).classList.toggle("hidden", !running);
  }
  setStatus(running ? state.machine.status.status : "map-only");
  $("dirty-toggle").checked = state.machine.dirtyLog;
  state.dirtyOn = state.machine.dirtyLog;
  setMap(await call("x-query-mtree"), await call("x-query-memslots"), false);
  addTimeline(await call("x-query-timeline"), false);
  if (running) {
    $("serial").textContent = "";
    appendSerial((await call("x-query-serial")).text);
    poll();
  }
  await new Promise((resolve) => requestAnimationFrame(resolve)); // the listings are drawn
  document.body.dataset.ready = "1";
}

function onPush(kind, data) {
  if (kind === "changes") {
    setMap(data.map, data.memslots, true);
    addTimeline(data.timeline, true);
    // From the commit on the VM thread to the map redrawn here (the same host's clock).
    const lag = Date.now() - data.committed;
    document.body.dataset.lagMs = String(lag);
    $("lag").textContent = `last change drawn ${lag} ms after its commit`;
  } else if (kind === "serial") {
    appendSerial(data.text);
  } else if (kind === "event") {
    if (data.status) setStatus(data.status.status);
    if (data.event === "SHUTDOWN") setStatus("shutdown");
  }
}

function setStatus(status) {
  state.status = status;
  const pill = $("status");
  pill.dataset.status = status;
  pill.textContent = status;
  document.body.dataset.status = status;
  const paused = status !== "running";
  $("btn-stop").disabled = paused;
  $("btn-cont").disabled = !paused;
}

let polling = false;
async function poll() {
  if (polling) return;
  polling = true;
  while (socket.readyState === WebSocket.OPEN) {
    try {
      const [vcpus, status] = await Promise.all([call("x-query-vcpus"), call("query-status")]);
      setStatus(status.status);
      showVcpus(vcpus);
      if (state.dirtyOn) showDirty(await call("x-query-dirty"));
    } catch (e) {
      if (socket.readyState !== WebSocket.OPEN) break;
      console.warn(e);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  polling = false;
}

// ---------------------------------------------------------------- addresses

const big = (hex) => BigInt(`0x${hex}`);
const hexShort = (v) => `0x${v.toString(16)}`;
function sizeText(n) {
  const units = [["E", 60n], ["P", 50n], ["T", 40n], ["G", 30n], ["M", 20n], ["K", 10n]];
  for (const [u, s] of units) if (n >= 1n << s && n % (1n << s) === 0n) return `${n >> s}${u}`;
  for (const [u, s] of units) if (n >= 1n << s) return `${(Number(n) / 2 ** Number(s)).toFixed(1)}${u}`;
  return `${n}`;
}

/**
 * A scale from addresses [lo, hi) to pixels [0, width): linear, or compressed, where every piece
 * between two region boundaries gets a width that grows with the log of its size, so a 4 KiB ROM
 * and a 3 GiB hole are both readable.
 */
function makeScale(bounds, lo, hi, width, mode) {
  const b = [lo];
  for (const v of bounds) if (v > lo && v < hi) b.push(v);
  b.push(hi);
  b.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  const u = b.filter((v, i) => i === 0 || v !== b[i - 1]);
  const weights = [];
  for (let i = 0; i + 1 < u.length; i++) {
    const size = Number(u[i + 1] - u[i]);
    weights.push(mode === "linear" ? size : Math.max(1, Math.log2(size) - 7));
  }
  const total = weights.reduce((a, c) => a + c, 0) || 1;
  const xs = [0];
  for (const w of weights) xs.push(xs[xs.length - 1] + (w / total) * width);
  const seg = (addr) => {
    let a = 0, z = u.length - 2;
    while (a < z) {
      const m = (a + z + 1) >> 1;
      if (u[m] <= addr) a = m;
      else z = m - 1;
    }
    return a;
  };
  const x = (addr) => {
    if (addr <= lo) return 0;
    if (addr >= hi) return width;
    const i = seg(addr);
    const frac = Number(addr - u[i]) / Number(u[i + 1] - u[i]);
    return xs[i] + frac * (xs[i + 1] - xs[i]);
  };
  const inv = (px) => {
    if (px <= 0) return lo;
    if (px >= width) return hi;
    let i = 0;
    while (i + 1 < xs.length - 1 && xs[i + 1] <= px) i++;
    const frac = (px - xs[i]) / (xs[i + 1] - xs[i] || 1);
    return u[i] + (BigInt(Math.round(frac * 1e9)) * (u[i + 1] - u[i])) / 1000000000n;
  };
  return { x, inv, bounds: u, xs };
}

// ---------------------------------------------------------------- the map

function regionKey(r) {
  return `${r.name}|${r.start}|${r.end}|${r.kind}|${r.enabled}|${r.alias ? r.alias.start : ""}`;
}

let listingFrame = 0;

function setMap(map, memslots, live) {
  const keys = new Set();
  const walk = (r) => {
    keys.add(regionKey(r));
    r.children.forEach(walk);
  };
  map.trees.forEach((t) => walk(t.root));
  map.aliasTargets.forEach((t) => walk(t.root));
  for (const f of map.flat) {
    for (const r of f.ranges) keys.add(`flat|${r.name}|${r.start}|${r.end}|${r.kind}`);
  }
  for (const s of memslots) keys.add(`slot|${s.slot}|${s.start}|${s.end}|${s.flags}`);
  state.fresh = live ? new Set([...keys].filter((k) => !state.keys.has(k))) : new Set();
  state.keys = keys;
  state.map = map;
  state.memslots = memslots;
  const started = performance.now();
  drawBars();
  document.body.dataset.drawMs = (performance.now() - started).toFixed(1);
  // The listings below the fold follow once the picture is on screen.
  cancelAnimationFrame(listingFrame);
  listingFrame = requestAnimationFrame(() => {
    drawTree();
    drawFlat();
    document.body.dataset.listVersion = document.body.dataset.mapVersion;
  });
  document.body.dataset.mapVersion = String(Number(document.body.dataset.mapVersion ?? 0) + 1);
}

function flatten(root) {
  const out = [];
  const walk = (r, depth) => {
    out.push({ r, depth });
    r.children.forEach((c) => walk(c, depth + 1));
  };
  walk(root, 0);
  return out;
}

/** Greedy rows per depth: overlapping regions (priorities) go on rows of their own, highest priority first. */
function packRows(items) {
  const byDepth = new Map();
  for (const it of items) {
    if (!byDepth.has(it.depth)) byDepth.set(it.depth, []);
    byDepth.get(it.depth).push(it);
  }
  const rows = [];
  for (const depth of [...byDepth.keys()].sort((a, b) => a - b)) {
    const list = byDepth.get(depth).slice().sort((a, b) =>
      b.r.prio - a.r.prio || (big(a.r.start) < big(b.r.start) ? -1 : 1)
    );
    const local = [];
    for (const it of list) {
      const s = big(it.r.start);
      let row = local.find((rw) => rw.every((o) => big(o.r.end) < s || big(o.r.start) > big(it.r.end)));
      if (!row) local.push(row = []);
      row.push(it);
    }
    local.forEach((row, i) => rows.push({ depth, sub: i, items: row }));
  }
  return rows;
}

function barBlocks() {
  const blocks = [];
  const memslotSpace = "memory";
  for (const t of state.map.trees) {
    const flat = state.map.flat.find((f) => f.spaces.some((s) => t.spaces.includes(s.name)));
    blocks.push({
      id: `as:${t.spaces.join(",")}`,
      title: t.spaces.join(", "),
      tag: "address space",
      tree: t,
      flat,
      slots: t.spaces.includes(memslotSpace) ? state.memslots : null,
    });
  }
  for (const t of state.map.aliasTargets) {
    const windows = [];
    const walk = (r) => {
      if (r.alias && r.enabled && r.alias.target === t.root.name) windows.push(r);
      r.children.forEach(walk);
    };
    [...state.map.trees, ...state.map.aliasTargets].forEach((x) => walk(x.root));
    blocks.push({ id: `mr:${t.root.name}`, title: t.root.name, tag: "alias target", tree: t, windows });
  }
  return blocks;
}

function defaultView(block) {
  const size = big(block.tree.root.end) + 1n;
  if (state.scale === "linear" && size > 1n << 33n) return { lo: 0n, hi: 1n << 32n };
  return { lo: 0n, hi: size };
}

function drawBars() {
  const host = $("bars");
  const scrollY = globalThis.scrollY;
  host.textContent = "";
  for (const block of barBlocks()) host.append(drawBar(block));
  globalThis.scrollTo(0, scrollY);
  $("legend").innerHTML = [
    ["ram", "RAM"],
    ["rom", "ROM"],
    ["romd", "ROM device"],
    ["i/o", "I/O (MMIO)"],
    ["container", "container"],
  ].map(([k, label]) => `<span><i style="background:${KIND_COLORS[k]}"></i>${label}</span>`).join("") +
    `<span><i style="background:#58a6ff"></i>alias → target</span>` +
    `<span><i style="background:#1f6feb"></i>KVM memslot</span>` +
    `<span><i style="background:repeating-linear-gradient(45deg,#d29922 0 3px,#1f6feb 3px 6px)"></i>read-only slot</span>` +
    `<span><i style="border:2px dashed #ffdf5d"></i>dirty logging</span>`;
}

function el(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawBar(block) {
  const card = document.createElement("div");
  card.className = "bar-card";
  card.id = `bar-${block.id}`;
  card.dataset.block = block.id;
  const view = state.views.get(block.id) ?? defaultView(block);
  const head = document.createElement("div");
  head.className = "bar-head";
  head.innerHTML =
    `<span class="bar-title">${esc(block.title)}<span class="kindtag">${block.tag}</span></span>` +
    `<span class="bar-range">${hexShort(view.lo)} – ${hexShort(view.hi - 1n)} (${
      sizeText(view.hi - view.lo)
    })</span>`;
  const zoom = document.createElement("div");
  zoom.className = "bar-zoom";
  const size = big(block.tree.root.end) + 1n;
  const presets = [["all", 0n, size]];
  if (size > 1n << 20n) presets.push(["1 MiB", 0n, 1n << 20n]);
  if (size > 1n << 33n) presets.push(["4 GiB", 0n, 1n << 32n]);
  for (const [label, lo, hi] of presets) {
    const b = document.createElement("button");
    b.textContent = label;
    b.onclick = () => setView(block.id, lo, hi);
    zoom.append(b);
  }
  head.append(zoom);
  card.append(head);

  const width = Math.max(400, ($("bars").clientWidth || 900) - 2);
  const plot = width - GUTTER;
  const items = flatten(block.tree.root);
  const bounds = [];
  for (const { r } of items) bounds.push(big(r.start), big(r.end) + 1n);
  if (block.flat) { for (const r of block.flat.ranges) bounds.push(big(r.start), big(r.end) + 1n); }
  if (block.slots) { for (const s of block.slots) bounds.push(big(s.start), big(s.end) + 1n); }
  const sc = makeScale(bounds, view.lo, view.hi, plot, state.scale);
  const X = (a) => GUTTER + sc.x(a);

  const lanes = [];
  if (block.slots) lanes.push({ label: "memslots", kind: "slots" });
  if (block.flat) lanes.push({ label: "flat view", kind: "flat" });
  if (block.windows) lanes.push({ label: "aliased by", kind: "windows" });
  // Disabled regions are listed below (as info mtree -D would) but left out of the picture.
  const rows = packRows(items.filter((it) => (it.depth > 0 || items.length === 1) && it.r.enabled));
  rows.forEach((row, i) =>
    lanes.push({
      label: i === 0 ? "region tree" : row.sub === 0 ? `level ${row.depth}` : "",
      kind: "tree",
      row,
    })
  );
  const height = lanes.length * (LANE + GAP) + 26;
  const placed = [];
  const svg = el("svg", { class: "bar", width, height, viewBox: `0 0 ${width} ${height}` });
  svg.append(defs());
  lanes.forEach((lane, i) => {
    const y = i * (LANE + GAP) + 2;
    if (lane.label) svg.append(el("text", { class: "lane", x: 2, y: y + 14 }, lane.label));
    svg.append(el("rect", { x: GUTTER, y, width: plot, height: LANE, fill: "#0d1117", rx: 2 }));
    if (lane.kind === "slots") {
      for (const s of block.slots) {
        const ro = s.flags & KVM_MEM_READONLY, log = s.flags & KVM_MEM_LOG_DIRTY_PAGES;
        const label = `slot ${s.slot}${ro ? " RO" : ""}${log ? " LOG" : ""}`;
        rect(svg, {
          a: big(s.start),
          b: big(s.end),
          y,
          X,
          label,
          lightText: true,
          fill: ro ? "url(#hatch-ro)" : "#1f6feb",
          stroke: log ? "#ffdf5d" : undefined,
          data: { kind: "memslot", name: `slot ${s.slot}`, start: s.start, end: s.end, flags: s.flags },
          fresh: state.fresh.has(`slot|${s.slot}|${s.start}|${s.end}|${s.flags}`),
          tip: `KVM memslot ${s.slot}\n${s.start}-${s.end} (${sizeText(big(s.end) - big(s.start) + 1n)})\n` +
            `flags ${flagText(s.flags)}\nmaps ${s.region} @${s.regionOffset}`,
        });
      }
    } else if (lane.kind === "flat") {
      for (const r of block.flat.ranges) {
        rect(svg, {
          a: big(r.start),
          b: big(r.end),
          y,
          X,
          label: r.name,
          fill: KIND_COLORS[r.kind.replace("nv-", "")] ?? "#6e7681",
          data: { kind: r.kind, name: r.name, start: r.start, end: r.end, lane: "flat" },
          fresh: state.fresh.has(`flat|${r.name}|${r.start}|${r.end}|${r.kind}`),
          tip: `${r.start}-${r.end} (prio ${r.prio}, ${r.kind}): ${r.name}${r.offset ? ` @${r.offset}` : ""}${
            r.kvm ? " KVM" : ""
          }`,
        });
      }
    } else if (lane.kind === "windows") {
      for (const r of block.windows) {
        rect(svg, {
          a: big(r.alias.start),
          b: big(r.alias.end),
          y,
          X,
          label: `${r.name} ← ${r.start}`,
          fill: "#58a6ff",
          data: { kind: "alias-window", name: r.name, start: r.alias.start, end: r.alias.end },
          tip: `alias ${r.name} maps ${block.title} ${r.alias.start}-${r.alias.end}\nat ${r.start}-${r.end}`,
        });
      }
    } else {
      for (const { r } of lane.row.items) {
        const alias = r.alias;
        placed.push({ r, y });
        rect(svg, {
          a: big(r.start),
          b: big(r.end),
          y,
          X,
          label: alias ? `${r.name} → ${alias.target}` : r.name,
          fill: alias ? `url(#hatch-${patternId(r.kind)})` : KIND_COLORS[r.kind] ?? "#6e7681",
          stroke: alias ? "#58a6ff" : undefined,
          solid: true,
          lightText: r.kind === "container" || !!alias,
          disabled: !r.enabled,
          data: {
            kind: alias ? "alias" : r.kind,
            name: r.name,
            start: r.start,
            end: r.end,
            prio: r.prio,
            lane: "tree",
          },
          fresh: state.fresh.has(regionKey(r)),
          tip: mtreeLine(r) + (alias ? `\n→ ${alias.target} window ${alias.start}-${alias.end}` : ""),
          onclick: alias
            ? () => focusBlock(`mr:${alias.target}`, big(alias.start), big(alias.end) + 1n)
            : undefined,
        });
      }
    }
  });
  drawAliasArrows(svg, placed, X);
  // Axis: the boundaries, labelled where there is room.
  const axisY = lanes.length * (LANE + GAP) + 4;
  svg.append(el("line", { x1: GUTTER, x2: GUTTER + plot, y1: axisY, y2: axisY, stroke: "#30363d" }));
  let lastX = -1e9;
  sc.bounds.forEach((v) => {
    const x = X(v);
    svg.append(el("line", { x1: x, x2: x, y1: axisY, y2: axisY + 4, stroke: "#6e7681" }));
    if (x - lastX < 64 || x > GUTTER + plot - 20) return;
    lastX = x;
    svg.append(el("text", { class: "tick", x: Math.max(GUTTER, x - 2), y: axisY + 15 }, hexShort(v)));
  });
  attachZoom(svg, block, sc, view);
  card.append(svg);
  return card;
}

const patternId = (kind) => kind.replace(/[^a-z]/g, "") || "x";

/**
 * An arrow from each alias to the window it maps, where its target is drawn in the same bar and the
 * window lies elsewhere (an alias onto the same addresses needs none).
 */
function drawAliasArrows(svg, placed, X) {
  const byName = new Map();
  for (const p of placed) if (!byName.has(p.r.name)) byName.set(p.r.name, p);
  for (const { r, y } of placed) {
    const target = r.alias && byName.get(r.alias.target);
    if (!target) continue;
    const base = big(target.r.start);
    const x1 = (X(big(r.start)) + X(big(r.end) + 1n)) / 2;
    const x2 = (X(base + big(r.alias.start)) + X(base + big(r.alias.end) + 1n)) / 2;
    if (Math.abs(x2 - x1) < 40) continue;
    const y1 = y + LANE / 2, y2 = target.y + LANE / 2;
    const lift = Math.min(60, Math.abs(x2 - x1) / 4);
    svg.append(el("path", {
      class: "arrow",
      d: `M ${x1} ${y1} C ${x1} ${y1 - lift}, ${x2} ${y2 - lift}, ${x2} ${y2}`,
      "marker-end": "url(#arrowhead)",
      "data-alias": r.name,
      "data-target": r.alias.target,
    }));
  }
}

function defs() {
  const d = el("defs");
  // An alias is drawn in its target's colour, striped, with a blue outline.
  d.innerHTML =
    `<marker id="arrowhead" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse">` +
    `<path d="M0,0 L8,4 L0,8 z" fill="#58a6ff"/></marker>` +
    `<pattern id="hatch-ro" width="8" height="8" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">` +
    `<rect width="8" height="8" fill="#1f6feb"/><rect width="4" height="8" fill="#d29922"/></pattern>` +
    Object.entries(KIND_COLORS).map(([kind, color]) =>
      `<pattern id="hatch-${
        patternId(kind)
      }" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(-45)">` +
      `<rect width="6" height="6" fill="#1b2a3c"/><rect width="3" height="6" fill="${color}" opacity=".75"/></pattern>`
    ).join("");
  return d;
}

function rect(svg, o) {
  const x1 = o.X(o.a), x2 = o.X(o.b + 1n);
  const w = Math.max(1.5, x2 - x1);
  const r = el("rect", {
    class: `r${o.disabled ? " disabled" : ""}${o.fresh ? " flash" : ""}`,
    x: x1,
    y: o.y,
    width: w,
    height: LANE,
    fill: o.fill,
    rx: 2,
  });
  if (o.stroke) {
    r.setAttribute("stroke", o.stroke);
    r.setAttribute("stroke-width", o.solid ? "1.5" : "2");
    if (!o.solid) r.setAttribute("stroke-dasharray", "4 2");
  }
  for (const [k, v] of Object.entries(o.data)) r.dataset[k] = String(v);
  r.addEventListener("mousemove", (e) => showTip(e, o.tip));
  r.addEventListener("mouseleave", hideTip);
  if (o.onclick) r.addEventListener("click", o.onclick);
  r.addEventListener("dblclick", (e) => {
    e.stopPropagation();
    const block = svg.closest(".bar-card").dataset.block;
    setView(block, o.a, o.b + 1n);
  });
  svg.append(r);
  const chars = Math.floor((w - 6) / 6.6);
  if (chars >= 3) {
    const text = o.label.length <= chars ? o.label : `${o.label.slice(0, chars - 1)}…`;
    svg.append(el("text", { x: x1 + 4, y: o.y + 14, class: o.lightText || o.disabled ? "light" : "" }, text));
  }
}

function attachZoom(svg, block, sc, view) {
  const plot = sc.xs[sc.xs.length - 1];
  const local = (e) => {
    const box = svg.getBoundingClientRect();
    return ((e.clientX - box.left) * svg.viewBox.baseVal.width) / box.width - GUTTER;
  };
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const p = Math.min(Math.max(local(e), 0), plot);
    const f = e.deltaY < 0 ? 0.6 : 1 / 0.6;
    const lo = sc.inv(p - p * f), hi = sc.inv(p + (plot - p) * f);
    setView(block.id, lo, hi > lo + 16n ? hi : lo + 16n);
  }, { passive: false });
  let drag = null;
  svg.addEventListener("mousedown", (e) => drag = { x: local(e) });
  svg.addEventListener("mouseup", (e) => {
    if (!drag) return;
    const dx = local(e) - drag.x;
    drag = null;
    if (Math.abs(dx) < 3) return;
    const size = big(block.tree.root.end) + 1n;
    let lo = sc.inv(-dx), hi = sc.inv(plot - dx);
    if (dx > 0) lo = view.lo - (sc.inv(dx) - view.lo), hi = sc.inv(plot - dx);
    else lo = sc.inv(-dx), hi = view.hi + (view.hi - sc.inv(plot + dx));
    setView(block.id, lo < 0n ? 0n : lo, hi > size ? size : hi);
  });
}

function setView(id, lo, hi) {
  if (hi <= lo) return;
  state.views.set(id, { lo, hi });
  state.fresh = new Set();
  drawBars();
}

function focusBlock(id, lo, hi) {
  setView(id, lo, hi);
  const card = document.getElementById(`bar-${id}`);
  card?.scrollIntoView({ behavior: "smooth", block: "center" });
}

function flagText(flags) {
  const names = [];
  if (flags & KVM_MEM_LOG_DIRTY_PAGES) names.push("LOG_DIRTY_PAGES");
  if (flags & KVM_MEM_READONLY) names.push("READONLY");
  return names.join("|") || "0";
}

// ---------------------------------------------------------------- text views

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function mtreeLine(r) {
  const head = `${r.start}-${r.end} (prio ${r.prio}, ${r.nv ? "nv-" : ""}${r.kind}): `;
  return r.alias
    ? `${head}alias ${r.name} @${r.alias.target} ${r.alias.start}-${r.alias.end}${
      r.enabled ? "" : " [disabled]"
    }`
    : `${head}${r.name}${r.enabled ? "" : " [disabled]"}`;
}

function drawTree() {
  const out = [];
  const row = (r, depth, block) => {
    const kind = r.alias ? "alias" : r.kind.replace("/", "");
    const cls = `row${r.enabled ? "" : " disabled"}${state.fresh.has(regionKey(r)) ? " flash" : ""}`;
    const head = `${"  ".repeat(depth)}<span class="addr">${r.start}-${r.end}</span> ` +
      `<span class="prio">(prio ${r.prio}, </span><span class="k-${
        kind === "io" ? "io" : r.kind === "i/o" ? "io" : kind
      }">${r.nv ? "nv-" : ""}${esc(r.kind)}</span><span class="prio">)</span>: `;
    const body = r.alias
      ? `alias ${esc(r.name)} <span class="k-alias">@${
        esc(r.alias.target)
      } ${r.alias.start}-${r.alias.end}</span>`
      : esc(r.name);
    out.push(
      `<div class="${cls}" data-block="${esc(block)}" data-name="${
        esc(r.name)
      }" data-start="${r.start}" data-end="${r.end}" ` +
        `data-prio="${r.prio}" data-kind="${esc(r.kind)}" data-enabled="${r.enabled}">${head}${body}${
          r.enabled ? "" : " [disabled]"
        }</div>`,
    );
    r.children.forEach((c) => row(c, depth + 1, block));
  };
  for (const t of state.map.trees) {
    const block = `as:${t.spaces.join(",")}`;
    for (const s of t.spaces) out.push(`<div class="blk">address-space: ${esc(s)}</div>`);
    row(t.root, 1, block);
  }
  for (const t of state.map.aliasTargets) {
    out.push(`<div class="blk">memory-region: ${esc(t.root.name)}</div>`);
    row(t.root, 1, `mr:${t.root.name}`);
  }
  const host = $("tree");
  host.innerHTML = out.join("");
  host.onclick = (e) => {
    const rowEl = e.target.closest(".row");
    if (rowEl) focusBlock(rowEl.dataset.block, big(rowEl.dataset.start), big(rowEl.dataset.end) + 1n);
  };
}

function drawFlat() {
  const out = [];
  state.map.flat.forEach((f, i) => {
    out.push(`<div class="blk">FlatView #${i}</div>`);
    for (const s of f.spaces) {
      out.push(
        `<div> AS "${esc(s.name)}", root: ${esc(s.root)}${s.alias ? `, alias ${esc(s.alias)}` : ""}</div>`,
      );
    }
    out.push(`<div> Root memory region: ${esc(f.root ?? "(none)")}</div>`);
    for (const r of f.ranges) {
      const k = r.kind.replace("nv-", "").replace("/", "");
      const fresh = state.fresh.has(`flat|${r.name}|${r.start}|${r.end}|${r.kind}`) ? " flash" : "";
      out.push(
        `<div class="row${fresh}" data-name="${esc(r.name)}" data-start="${r.start}" data-end="${r.end}">  ` +
          `<span class="addr">${r.start}-${r.end}</span> <span class="prio">(prio ${r.prio}, </span>` +
          `<span class="k-${k}">${esc(r.kind)}</span><span class="prio">)</span>: ${esc(r.name)}` +
          `${r.offset ? ` @${r.offset}` : ""}${r.kvm ? ' <span class="kvm">KVM</span>' : ""}</div>`,
      );
    }
  });
  $("flat").innerHTML = out.join("");
}

// ---------------------------------------------------------------- timeline

const TIMELINE_SHOW = 600;

function addTimeline(entries, live) {
  // A push may repeat what the first query already returned: keep each entry once.
  const last = state.timeline.length ? state.timeline[state.timeline.length - 1].seq : -1;
  entries = entries.filter((e) => e.seq > last);
  for (const e of entries) e.live = live;
  state.timeline.push(...entries);
  if (state.timeline.length > TIMELINE_SHOW * 2) {
    state.timeline.splice(0, state.timeline.length - TIMELINE_SHOW * 2);
  }
  drawTimeline();
}

function drawTimeline() {
  const showNop = $("show-nop").checked;
  const batches = new Map();
  for (const e of state.timeline.slice(-TIMELINE_SHOW)) {
    if (!batches.has(e.batch)) batches.set(e.batch, []);
    batches.get(e.batch).push(e);
  }
  const out = [];
  const order = [...batches.keys()].sort((a, b) => b - a);
  for (const b of order) {
    const list = batches.get(b);
    const nops = list.filter((e) => e.kind === "regionNop").length;
    const when = new Date(list[0].time).toISOString().slice(11, 23);
    out.push(`<div class="tl-batch${list.some((e) => e.live) ? " new" : ""}" data-batch="${b}">`);
    out.push(
      `<div class="tl-head">commit #${b} · ${when}${
        nops && !showNop ? ` · ${nops} regionNop hidden` : ""
      }</div>`,
    );
    list.forEach((e, i) => {
      if (e.kind === "regionNop" && !showNop) return;
      const next = e.kind === "memslot"
        ? list.slice(i + 1).find((n) => n.kind === "memslot" && n.slot === e.slot)
        : undefined;
      out.push(timelineRow(e, next));
    });
    out.push("</div>");
  }
  $("timeline").innerHTML = out.join("") || '<div class="muted">no changes since the page connected</div>';
}

function timelineRow(e, next) {
  if (e.kind === "memslot") {
    const size = BigInt(e.size);
    const tags = [];
    if (size === 0n) {
      // The kernel refuses a read-only change in place: a delete, then the slot again.
      const again = next && BigInt(next.size) !== 0n;
      const flip = again && next.gpa === e.gpa && ((next.flags ^ e.flags) & KVM_MEM_READONLY) !== 0;
      tags.push(`<span class="tag del">${flip ? "delete before read-only change" : "delete"}</span>`);
    }
    if (e.flags & KVM_MEM_READONLY) tags.push('<span class="tag ro">READONLY</span>');
    if (e.flags & KVM_MEM_LOG_DIRTY_PAGES) tags.push('<span class="tag log">LOG_DIRTY_PAGES</span>');
    if (e.error) tags.push(`<span class="tag err">${esc(e.error)}</span>`);
    return `<div class="tl memslot" data-kind="memslot" data-slot="${e.slot}" data-gpa="${e.gpa}" data-size="${e.size}" data-flags="${e.flags}">` +
      `<div class="l1"><span class="kind">KVM</span><span class="f">SET_USER_MEMORY_REGION slot ${
        e.slot & 0xffff
      } ${tags.join(" ")}</span></div>` +
      `<div class="sub">gpa ${
        hexShort(big(e.gpa))
      } size ${e.size} flags ${e.flags} host ${e.host}</div></div>`;
  }
  const tags = [];
  if (e.readonly) tags.push('<span class="tag ro">read-only</span>');
  if (e.dirtyLog) tags.push(`<span class="tag log">dirty log ${e.dirtyLog}</span>`);
  const size = big(e.end) - big(e.start) + 1n;
  return `<div class="tl ${e.kind}" data-kind="${e.kind}" data-region="${
    esc(e.region)
  }" data-start="${e.start}" data-end="${e.end}">` +
    `<div class="l1"><span class="kind">${e.kind}</span><span class="f">${hexShort(big(e.start))}-${
      hexShort(big(e.end))
    } <b>${esc(e.region)}</b> ${tags.join(" ")}</span></div>` +
    `<div class="sub">AS ${esc(e.as)} · ${sizeText(size)} · offset ${hexShort(big(e.offset))}</div></div>`;
}

// ---------------------------------------------------------------- vCPUs

function showVcpus(data) {
  const prev = state.lastVcpus;
  state.lastVcpus = data;
  const dt = prev ? (data.time - prev.time) / 1000 : 0;
  const host = $("vcpus");
  for (const v of data.vcpus) {
    let card = host.querySelector(`[data-cpu="${v.cpu}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "vcpu";
      card.dataset.cpu = v.cpu;
      card.innerHTML =
        `<div class="vcpu-head"><b>CPU ${v.cpu}</b><span class="pill"></span><span class="rate"></span>` +
        `<button class="regs-btn">registers</button></div><div class="exits"></div><pre class="regs hidden"></pre>`;
      card.querySelector(".regs-btn").onclick = () => showRegisters(card, v.cpu);
      host.append(card);
    }
    const pill = card.querySelector(".pill");
    pill.dataset.status = v.state;
    pill.textContent = v.state;
    card.dataset.state = v.state;
    const before = prev?.vcpus[v.cpu]?.exits ?? {};
    const rates = Object.keys(v.exits).map((
      k,
    ) => [k, dt > 0 ? (v.exits[k] - (before[k] ?? 0)) / dt : 0, v.exits[k]]);
    rates.sort((a, b) => b[2] - a[2]);
    const total = rates.reduce((a, r) => a + r[1], 0);
    card.querySelector(".rate").textContent = `${fmtRate(total)} exits/s`;
    const max = Math.max(1, ...rates.map((r) => r[1]));
    card.querySelector(".exits").innerHTML = rates.map(([k, rate, n]) =>
      `<span data-reason="${k}">${k}</span><div class="meter"><span style="width:${
        (100 * rate) / max
      }%"></span></div>` +
      `<span class="n" title="${n} in all">${fmtRate(rate)}/s</span>`
    ).join("") || '<span class="muted">no exits yet</span>';
  }
}

function fmtRate(n) {
  return n >= 10000 ? `${(n / 1000).toFixed(0)}k` : n >= 100 ? n.toFixed(0) : n.toFixed(1);
}

async function showRegisters(card, cpu) {
  const pre = card.querySelector(".regs");
  if (!pre.classList.contains("hidden")) return pre.classList.add("hidden");
  pre.classList.remove("hidden");
  pre.textContent = "…";
  try {
    pre.textContent = (await call("x-query-registers", { cpu })).text;
  } catch (e) {
    pre.textContent = e.message;
  }
}

// ---------------------------------------------------------------- dirty pages

function showDirty(data) {
  const host = $("heatmaps");
  if (data.regions.length === 0) {
    host.textContent = "dirty logging is off";
    host.classList.add("muted");
    return;
  }
  host.classList.remove("muted");
  if (host.querySelector(".heat") === null) host.textContent = "";
  for (const r of data.regions) {
    let h = state.heat.get(r.name);
    if (!h || h.pages !== r.pages) {
      // Each page a square cell (a 1-pixel gap once there is room), rows of a power of two pages.
      const cols = Math.min(256, Math.max(16, 2 ** Math.ceil(Math.log2(Math.sqrt(r.pages * 2)))));
      const cell = Math.max(2, Math.floor(HEAT_WIDTH / cols));
      h = {
        pages: r.pages,
        cols,
        cell,
        gap: cell >= 4 ? 1 : 0,
        rows: Math.ceil(r.pages / cols),
        heat: new Float32Array(r.pages),
        seen: new Set(),
      };
      state.heat.set(r.name, h);
      const div = document.createElement("div");
      div.className = "heat";
      div.dataset.region = r.name;
      div.innerHTML =
        `<div class="heat-head"><span><b>${
          esc(r.name)
        }</b> · ${r.pages} pages of 4 KiB, ${h.cols} to a row</span>` +
        `<span class="heat-legend"><i style="background:#ffd600"></i>written in the last interval ` +
        `<i style="background:#db6d28"></i>fading <i style="background:#386ebe"></i>earlier ` +
        `<i style="background:#1c2128"></i>never</span>` +
        `<span class="count"></span></div><canvas width="${h.cols * cell}" height="${
          h.rows * cell
        }"></canvas>`;
      const canvas = div.querySelector("canvas");
      canvas.addEventListener("mousemove", (e) => {
        const box = canvas.getBoundingClientRect();
        const col = Math.floor(((e.clientX - box.left) / box.width) * h.cols);
        const row = Math.floor(((e.clientY - box.top) / box.height) * h.rows);
        const page = row * h.cols + col;
        showTip(
          e,
          `${r.name} page ${page}\noffset ${hexShort(BigInt(page) * 4096n)}\n${
            h.seen.has(page) ? "written since logging began" : "not written"
          }`,
        );
      });
      canvas.addEventListener("mouseleave", hideTip);
      host.append(div);
      h.div = div;
    }
    const bits = Uint8Array.from(atob(r.bitmap), (c) => c.charCodeAt(0));
    for (let p = 0; p < r.pages; p++) {
      h.heat[p] *= 0.55;
      if (bits[p >> 3] & (1 << (p & 7))) {
        h.heat[p] = 1;
        h.seen.add(p);
      }
    }
    h.div.dataset.seen = [...h.seen].sort((a, b) => a - b).slice(0, 4096).join(",");
    h.div.dataset.last = String(r.count);
    h.div.querySelector(".count").textContent =
      `${r.count} written in the last ${POLL_MS} ms · ${h.seen.size} so far`;
    const ctx = h.div.querySelector("canvas").getContext("2d");
    ctx.fillStyle = "#010409";
    ctx.fillRect(0, 0, h.cols * h.cell, h.rows * h.cell);
    for (let p = 0; p < r.pages; p++) {
      const [R, G, B] = heatColor(h.heat[p], h.seen.has(p));
      ctx.fillStyle = `rgb(${R},${G},${B})`;
      ctx.fillRect((p % h.cols) * h.cell, Math.floor(p / h.cols) * h.cell, h.cell - h.gap, h.cell - h.gap);
    }
  }
}

function heatColor(t, seen) {
  if (t < 0.02) return seen ? [56, 110, 190] : [28, 33, 40];
  // dark red → orange → yellow as the heat grows
  const stops = [[110, 20, 20], [219, 109, 40], [255, 214, 0]];
  const x = Math.min(0.999, t) * (stops.length - 1);
  const i = Math.floor(x), f = x - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

// ---------------------------------------------------------------- serial

// deno-lint-ignore no-control-regex -- the escape sequences a guest prints
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\r/g;
function appendSerial(text) {
  const pre = $("serial");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
  pre.textContent = (pre.textContent + text.replace(ANSI, "")).slice(-64000);
  if (atEnd) pre.scrollTop = pre.scrollHeight;
}

// ---------------------------------------------------------------- tooltip and controls

function showTip(e, text) {
  const tip = $("tip");
  tip.textContent = text;
  tip.hidden = false;
  const x = Math.min(e.clientX + 14, globalThis.innerWidth - tip.offsetWidth - 8);
  tip.style.left = `${x}px`;
  tip.style.top = `${e.clientY + 16}px`;
}
function hideTip() {
  $("tip").hidden = true;
}

$("btn-stop").onclick = () => call("stop").then(() => setStatus("paused"));
$("btn-cont").onclick = () => call("cont").then(() => setStatus("running"));
$("btn-reset").onclick = () => call("system_reset");
$("dirty-toggle").onchange = async (e) => {
  const on = e.target.checked;
  await call("x-dirty-log", { on });
  state.dirtyOn = on;
  state.heat.clear();
  $("heatmaps").textContent = on ? "waiting for the first interval…" : "dirty logging is off";
};
$("show-nop").onchange = drawTimeline;
$("show-disabled").onchange = (e) => $("tree").classList.toggle("hide-disabled", !e.target.checked);
$("tree").classList.add("hide-disabled");
for (const b of document.querySelectorAll("#scale-mode button")) {
  b.onclick = () => {
    state.scale = b.dataset.scale;
    for (const o of document.querySelectorAll("#scale-mode button")) o.classList.toggle("on", o === b);
    state.views.clear();
    state.fresh = new Set();
    if (state.map) drawBars();
  };
}
let resizeTimer;
globalThis.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => state.map && drawBars(), 150);
});

connect();
