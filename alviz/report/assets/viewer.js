/* alviz report: the interactive t-SNE viewer (inlined into report.html; no network, no library).
   Reads the JSON of <script id="alviz-tsne"> and builds, inside <div id="tv">: a toolbar (filters by
   correctness and class, search by sample id, reset, linked zoom and pan, the count of visible
   points), a legend, one canvas per (method, layer) panel, a tooltip and the pinned point's panel.
   window.alvizViewer exposes the state for tests (visible count, pinned sample, each panel's view).
   The same viewer draws the t-SNE strip across training epochs (<script id="alviz-tsne-strip"> into
   <div id="tv-strip">, columns are epochs); the script may be inlined once per viewer on a page:
   a viewer already drawn is left alone. */
(function () {
'use strict';
function start(el, root) {
if (!el || !root || root.getAttribute('data-drawn')) return;
root.setAttribute('data-drawn', '1');
var P = root.id === 'tv' ? 'tv' : root.id;  // element ids inside this viewer: tv-count, tv-strip-count, ...
var D = JSON.parse(el.textContent), N = D.labels.length, R = D.rows.length, C = D.cols.length;
var groups = D.groups, nLegend = groups ? groups.names.length : D.classNames.length;
var S = {filter: 'all', cls: -1, hidden: {}, hover: -1, pin: -1, pinView: null, linked: false, active: null};
var visible = new Uint8Array(N), nVisible = N, views = [], pending = false, sprite = null;
var narrowQ = window.matchMedia ? window.matchMedia('(max-width: 640px)') : null;
if (D.thumb) { sprite = new Image(); sprite.onload = function () { showPin(); }; sprite.src = D.thumb.src; }

function h(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
function legendOf(i) { return groups ? groups.of[D.labels[i]] : D.labels[i]; }
function colorOf(i) { return D.colors[D.labels[i]]; }
function predOf(r, i) { var p = D.pred[r]; return p ? p.pred[i] : null; }
function right(r, i) { return predOf(r, i) === D.labels[i]; }
function className(c) { return D.classNames[c] + (groups ? ' (' + groups.names[groups.of[c]] + ')' : ''); }

// ---- filters
var runs = Object.keys(D.pred || {});
var FILTERS = [['all', 'all points']];
if (runs.length) FILTERS.push(['wrong', 'misclassified by ' + (runs.length > 1 ? 'either run' : runs[0])]);
if (runs.length > 1) {
  FILTERS.push(['only0', runs[0] + ' right, ' + runs[1] + ' wrong']);
  FILTERS.push(['only1', runs[1] + ' right, ' + runs[0] + ' wrong']);
  FILTERS.push(['right', 'right in every run']);
}
function passes(i) {
  if (S.hidden[legendOf(i)]) return false;
  if (S.cls >= 0 && D.labels[i] !== S.cls) return false;
  switch (S.filter) {
    case 'wrong': return runs.some(function (r) { return !right(r, i); });
    case 'only0': return right(runs[0], i) && !right(runs[1], i);
    case 'only1': return right(runs[1], i) && !right(runs[0], i);
    case 'right': return runs.every(function (r) { return right(r, i); });
  }
  return true;
}
function refilter() {
  nVisible = 0;
  for (var i = 0; i < N; i++) { visible[i] = passes(i) ? 1 : 0; nVisible += visible[i]; }
  var what = [];
  if (S.filter !== 'all') what.push(fsel.options[fsel.selectedIndex].text);
  if (S.cls >= 0) what.push('class ' + className(S.cls));
  var off = Object.keys(S.hidden).filter(function (c) { return S.hidden[c]; }).length;
  if (off) what.push(off + ' hidden in the legend');
  count.textContent = nVisible + ' of ' + N + ' points shown' + (what.length ? ' (' + what.join('; ') + ')' : '');
  count.setAttribute('data-visible', String(nVisible));
  if (S.hover >= 0 && !visible[S.hover]) S.hover = -1;
  redraw();
}

// ---- toolbar
var bar = h('div', 'bar'), count = h('output', 'count');
count.id = P + '-count';
function labelled(text, ctl) { var l = h('label', null, text + ' '); l.appendChild(ctl); bar.appendChild(l); return ctl; }
var fsel = h('select'); fsel.id = P + '-filter';
FILTERS.forEach(function (f) { var o = h('option', null, f[1]); o.value = f[0]; fsel.appendChild(o); });
if (FILTERS.length > 1) labelled('show', fsel);
fsel.onchange = function () { S.filter = fsel.value; refilter(); };
var csel = h('select'); csel.id = P + '-class';
var o0 = h('option', null, 'all classes'); o0.value = '-1'; csel.appendChild(o0);
D.classNames.forEach(function (n, c) { var o = h('option', null, className(c)); o.value = String(c); csel.appendChild(o); });
labelled('class', csel);
csel.onchange = function () { S.cls = parseInt(csel.value, 10); refilter(); };
var search = h('input'); search.id = P + '-search'; search.type = 'search'; search.placeholder = 'sample id';
search.setAttribute('inputmode', 'numeric'); search.size = 8;
labelled('find', search);
search.onkeydown = function (e) { if (e.key === 'Enter') find(search.value); };
var go = h('button', null, 'find'); go.type = 'button'; go.onclick = function () { find(search.value); }; bar.appendChild(go);
var reset = h('button', null, 'reset view'); reset.type = 'button'; reset.id = P + '-reset';
reset.onclick = function () { views.forEach(home); S.hover = -1; S.pin = -1; S.pinView = null; tip.style.display = 'none'; showPin(); redraw(); };
bar.appendChild(reset);
var link = h('input'); link.type = 'checkbox'; link.id = P + '-link';
var ll = h('label'); ll.appendChild(link); ll.appendChild(document.createTextNode(' link zoom and pan')); bar.appendChild(ll);
link.onchange = function () { S.linked = link.checked; if (S.linked && views.length) { sync(S.active || views[0]); redraw(); } };
bar.appendChild(count);
root.appendChild(bar);
var msg = h('div', 'note'); msg.setAttribute('role', 'status'); root.appendChild(msg);

// ---- legend (buttons: reachable and operable by keyboard)
var legend = h('div', 'legend');
legend.appendChild(document.createTextNode(groups ? 'superclasses' : 'classes'));
legend.appendChild(h('span', 'hint', ' (click to hide or show)'));
legend.appendChild(document.createTextNode(': '));
for (var c = 0; c < nLegend; c++) (function (c) {
  var b = h('button'); b.type = 'button'; b.setAttribute('aria-pressed', 'true');
  var sw = h('i'); sw.style.background = groups ? D.colors[groups.of.indexOf(c)] : D.colors[c];
  b.appendChild(sw); b.appendChild(document.createTextNode(groups ? groups.names[c] : D.classNames[c]));
  b.onclick = function () { S.hidden[c] = !S.hidden[c]; b.className = S.hidden[c] ? 'off' : ''; b.setAttribute('aria-pressed', String(!S.hidden[c])); refilter(); };
  legend.appendChild(b);
})(c);
root.appendChild(legend);

// ---- the grid of panels
var grid = h('div', 'grid'); root.appendChild(grid);
var corner = h('div'), colHeads = [], rowHeads = [], cells = [];
grid.appendChild(corner);
D.cols.forEach(function (c) { var t = h('div', 'head', (D.colLabel || 'position') + ' ' + c); colHeads.push(t); grid.appendChild(t); });
D.rows.forEach(function (r, ri) {
  var t = h('div', 'head', r); rowHeads.push(t); grid.appendChild(t);
  D.cols.forEach(function (c, ci) {
    var p = D.panels[ri * C + ci], cell = h('div', 'cell'); cells.push([cell, ri, ci]); grid.appendChild(cell);
    cell.appendChild(h('div', 'ttl', p ? r + ' ' + p.title : 'n/a'));
    if (!p) return;
    var cv = h('canvas'); cv.tabIndex = 0;
    cv.setAttribute('role', 'img');
    cv.setAttribute('aria-label', 't-SNE of ' + r + ' ' + p.title + ' (arrows pan, + and - zoom, 0 resets)');
    cell.appendChild(cv);
    var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (var i = 0; i < N; i++) { x0 = Math.min(x0, p.x[i]); x1 = Math.max(x1, p.x[i]); y0 = Math.min(y0, p.y[i]); y1 = Math.max(y1, p.y[i]); }
    var v = {p: p, cv: cv, row: r, home: [(x0 + x1) / 2, (y0 + y1) / 2], span: Math.max(x1 - x0, y1 - y0, 1e-9) * 1.08};
    home(v); views.push(v); attach(v);
  });
});
function layout() {
  var narrow = narrowQ && narrowQ.matches, n = narrow ? R : C;
  grid.style.gridTemplateColumns = '1.4em repeat(' + n + ',minmax(0,' + (narrow ? '1fr' : '340px') + '))';
  function at(e, row, col) { e.style.gridRow = String(row); e.style.gridColumn = String(col); }
  at(corner, 1, 1);
  colHeads.forEach(function (t, ci) { if (narrow) at(t, ci + 2, 1); else at(t, 1, ci + 2); t.className = narrow ? 'head side' : 'head top'; });
  rowHeads.forEach(function (t, ri) { if (narrow) at(t, 1, ri + 2); else at(t, ri + 2, 1); t.className = narrow ? 'head top' : 'head side'; });
  cells.forEach(function (x) { if (narrow) at(x[0], x[2] + 2, x[1] + 2); else at(x[0], x[1] + 2, x[2] + 2); });
  redraw();
}
var tip = h('div', 'tip'); tip.setAttribute('role', 'tooltip'); root.appendChild(tip);
var pinBox = h('div', 'pin'); pinBox.setAttribute('aria-live', 'polite'); root.appendChild(pinBox);

// ---- drawing
function home(v) { v.cx = v.home[0]; v.cy = v.home[1]; v.z = 1; }
function size(v) {
  var r = v.cv.getBoundingClientRect(), d = window.devicePixelRatio || 1, w = Math.max(1, Math.round(r.width * d));
  if (v.cv.width !== w) { v.cv.width = w; v.cv.height = w; }
  return w;
}
function k(v) { return v.cv.width / v.span * v.z; }
function px(v, i) { var s = k(v), w = v.cv.width; return [w / 2 + (v.p.x[i] - v.cx) * s, w / 2 - (v.p.y[i] - v.cy) * s]; }
function ring(g, q, rad, color, width) { g.lineWidth = width; g.strokeStyle = color; g.beginPath(); g.arc(q[0], q[1], rad, 0, 2 * Math.PI); g.stroke(); }
function draw(v) {
  var w = size(v), g = v.cv.getContext('2d'), d = window.devicePixelRatio || 1, r = Math.max(1.2, D.pointSize * d);
  g.clearRect(0, 0, w, w);
  var sx = new Float64Array(D.classNames.length), sy = new Float64Array(D.classNames.length), sn = new Float64Array(D.classNames.length);
  for (var j = 0; j < N; j++) {  // a seeded random order: no class always on top
    var i = D.order[j];
    if (!visible[i]) continue;
    var q = px(v, i), c = D.labels[i];
    sx[c] += q[0]; sy[c] += q[1]; sn[c] += 1;
    if (q[0] < -r || q[1] < -r || q[0] > w + r || q[1] > w + r) continue;
    g.fillStyle = D.colors[c]; g.beginPath(); g.arc(q[0], q[1], r, 0, 2 * Math.PI); g.fill();
  }
  if (D.classNames.length <= 20) {  // each cluster labelled with its class at its centroid
    g.font = 'bold ' + Math.round(11 * d) + 'px sans-serif'; g.textAlign = 'center'; g.textBaseline = 'middle';
    g.lineJoin = 'round'; g.lineWidth = 3 * d; g.strokeStyle = 'rgba(255,255,255,.9)';
    for (var c2 = 0; c2 < sn.length; c2++) {
      if (!sn[c2]) continue;
      var lx = sx[c2] / sn[c2], ly = sy[c2] / sn[c2];
      g.strokeText(D.classNames[c2], lx, ly); g.fillStyle = '#111'; g.fillText(D.classNames[c2], lx, ly);
    }
  }
  if (S.pin >= 0) { var qp = px(v, S.pin); ring(g, qp, 8 * d, '#fff', 4 * d); ring(g, qp, 8 * d, '#c00', 2 * d); }
  if (S.hover >= 0) ring(g, px(v, S.hover), 6 * d, '#000', 2 * d);
  v.cv.classList.toggle('active', S.active === v);
}
function redraw() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(function () { pending = false; views.forEach(draw); });
}
function sync(v) {  // linked zoom and pan: every panel takes v's zoom and offset from its home
  if (!S.linked) return;
  views.forEach(function (u) { if (u !== v) { u.z = v.z; u.cx = u.home[0] + (v.cx - v.home[0]) / v.span * u.span; u.cy = u.home[1] + (v.cy - v.home[1]) / v.span * u.span; } });
}
function thumb(i, size) {
  var cv = h('canvas', 'thumb'); cv.width = D.thumb.w; cv.height = D.thumb.h;
  cv.style.width = cv.style.height = size + 'px';
  if (sprite && sprite.complete && sprite.naturalWidth) {
    var cols = D.thumb.cols;
    cv.getContext('2d').drawImage(sprite, (i % cols) * D.thumb.w, Math.floor(i / cols) * D.thumb.h, D.thumb.w, D.thumb.h, 0, 0, D.thumb.w, D.thumb.h);
  }
  return cv;
}
function describe(i, box) {
  var a = h('div'), dot = h('b', null, '\u25cf '); dot.style.color = colorOf(i);
  a.appendChild(dot); a.appendChild(document.createTextNode('class ' + className(D.labels[i]) + ' \u00b7 sample id ' + D.ids[i]));
  box.appendChild(a);
  runs.forEach(function (r) {
    var p = D.pred[r], ok = p.pred[i] === D.labels[i];
    var line = h('div', ok ? 'ok' : 'bad', r + ': ' + (ok ? '\u2713 ' : '\u2717 ') + 'predicted ' + D.classNames[p.pred[i]] +
      (p.conf ? ' (' + Math.round(p.conf[i] * 100) + ' %)' : ''));
    box.appendChild(line);
  });
}

// ---- tooltip, kept inside the window
function showTip(e) {
  if (S.hover < 0) { tip.style.display = 'none'; return; }
  tip.innerHTML = '';
  describe(S.hover, tip);
  if (D.thumb) tip.appendChild(thumb(S.hover, 84));
  tip.style.display = 'block';
  var w = tip.offsetWidth, ht = tip.offsetHeight, W = document.documentElement.clientWidth, H = window.innerHeight;
  var x = e.clientX + 14, y = e.clientY + 12;
  if (x + w > W - 4) x = e.clientX - 14 - w;
  if (y + ht > H - 4) y = e.clientY - 12 - ht;
  tip.style.left = Math.max(4, Math.min(x, W - w - 4)) + 'px';
  tip.style.top = Math.max(4, Math.min(y, H - ht - 4)) + 'px';
}

// ---- pinned point and its nearest neighbours in that layer
function pin(i, v) { S.pin = i; S.pinView = v || S.pinView || views[0] || null; showPin(); redraw(); }
function showPin() {
  pinBox.innerHTML = '';
  if (S.pin < 0) return;
  var i = S.pin, v = S.pinView;
  var head = h('div', 'pinhead'); describe(i, head);
  if (!visible[i]) head.appendChild(h('div', 'note', '(hidden by the current filter)'));
  var clr = h('button', null, 'unpin'); clr.type = 'button'; clr.onclick = function () { S.pin = -1; showPin(); redraw(); };
  head.appendChild(clr);
  pinBox.appendChild(head);
  if (D.thumb) pinBox.appendChild(thumb(i, 64));
  if (!v || !v.p.nn) return;
  pinBox.appendChild(h('div', 'note', 'nearest neighbours in ' + v.row + ' ' + v.p.title + ' (Euclidean, in the layer itself):'));
  var list = h('ol', 'nn');
  for (var j = 0; j < v.p.k; j++) (function (n) {
    var li = h('li'), b = h('button'); b.type = 'button';
    b.title = 'pin sample id ' + D.ids[n];
    if (D.thumb) b.appendChild(thumb(n, 40));
    var t = h('span', D.labels[n] === D.labels[i] ? 'same' : 'other', D.classNames[D.labels[n]] + ' \u00b7 id ' + D.ids[n]);
    b.appendChild(t); b.onclick = function () { pin(n, v); };
    li.appendChild(b); list.appendChild(li);
  })(v.p.nn[i * v.p.k + j]);
  pinBox.appendChild(list);
}
function find(text) {
  var id = parseInt(String(text).trim(), 10);
  if (!/^\s*-?\d+\s*$/.test(String(text))) { msg.textContent = 'a sample id is a whole number; received "' + text + '"'; return; }
  var i = D.ids.indexOf(id);
  if (i < 0) { msg.textContent = 'sample id ' + id + ' is not among the ' + N + ' points of this view'; return; }
  msg.textContent = '';
  pin(i, views[0]);
}

// ---- interaction
function nearest(v, m) {
  var best = -1, bd = Infinity, lim = Math.pow(8 * (window.devicePixelRatio || 1), 2);
  for (var i = 0; i < N; i++) {
    if (!visible[i]) continue;
    var q = px(v, i), dd = (q[0] - m[0]) * (q[0] - m[0]) + (q[1] - m[1]) * (q[1] - m[1]);
    if (dd < bd) { bd = dd; best = i; }
  }
  return bd <= lim ? best : -1;
}
function local(v, e) { var r = v.cv.getBoundingClientRect(), d = v.cv.width / r.width; return [(e.clientX - r.left) * d, (e.clientY - r.top) * d]; }
function zoom(v, f, m) {
  var s = k(v), w = v.cv.width; m = m || [w / 2, w / 2];
  var dx = v.cx + (m[0] - w / 2) / s, dy = v.cy - (m[1] - w / 2) / s;
  v.z = Math.min(Math.max(v.z * f, 0.5), 200); s = k(v);
  v.cx = dx - (m[0] - w / 2) / s; v.cy = dy + (m[1] - w / 2) / s; sync(v); redraw();
}
function pan(v, dx, dy) { var s = k(v); v.cx -= dx / s; v.cy += dy / s; sync(v); redraw(); }
function clearHover() { if (S.hover >= 0) { S.hover = -1; redraw(); } tip.style.display = 'none'; }
function attach(v) {
  var down = null, dragging = false;
  v.cv.addEventListener('wheel', function (e) {
    if (!(e.ctrlKey || e.metaKey || S.active === v)) return;  // the page scrolls: never trapped
    e.preventDefault(); zoom(v, Math.exp(-e.deltaY * 0.0015), local(v, e));
  }, {passive: false});
  v.cv.addEventListener('pointerdown', function (e) { down = [e.clientX, e.clientY]; dragging = false; v.cv.setPointerCapture(e.pointerId); });
  v.cv.addEventListener('pointerup', function (e) {
    if (down && !dragging) {  // a click: this panel takes the wheel; pin the point under the pointer
      S.active = v; var i = nearest(v, local(v, e));
      if (i >= 0) pin(i, v); else redraw();
    }
    down = null; dragging = false;
  });
  v.cv.addEventListener('pointermove', function (e) {
    if (down) {
      if (!dragging && Math.abs(e.clientX - down[0]) + Math.abs(e.clientY - down[1]) > 3) { dragging = true; clearHover(); }
      if (dragging) { var d = v.cv.width / v.cv.getBoundingClientRect().width; pan(v, (e.clientX - down[0]) * d, (e.clientY - down[1]) * d); down = [e.clientX, e.clientY]; return; }
    }
    var nh = nearest(v, local(v, e));
    if (nh !== S.hover) { S.hover = nh; redraw(); }
    showTip(e);
  });
  v.cv.addEventListener('pointerleave', clearHover);
  v.cv.addEventListener('dblclick', function () { home(v); sync(v); redraw(); });
  v.cv.addEventListener('keydown', function (e) {
    var step = v.cv.width / 10, used = true;
    switch (e.key) {
      case 'ArrowLeft': pan(v, -step, 0); break;
      case 'ArrowRight': pan(v, step, 0); break;
      case 'ArrowUp': pan(v, 0, -step); break;
      case 'ArrowDown': pan(v, 0, step); break;
      case '+': case '=': zoom(v, 1.25); break;
      case '-': case '_': zoom(v, 0.8); break;
      case '0': home(v); sync(v); redraw(); break;
      case 'Escape': S.pin = -1; showPin(); redraw(); break;
      default: used = false;
    }
    if (used) e.preventDefault();
  });
}
document.addEventListener('pointerdown', function (e) { if (S.active && e.target !== S.active.cv) { S.active = null; redraw(); } });
window.addEventListener('resize', function () { clearHover(); redraw(); });
window.addEventListener('scroll', function () { tip.style.display = 'none'; }, {passive: true});
if (narrowQ) { if (narrowQ.addEventListener) narrowQ.addEventListener('change', layout); else narrowQ.addListener(layout); }
var api = {
  visible: function () { return nVisible; },
  total: N,
  filters: FILTERS.map(function (f) { return f[0]; }),
  pinned: function () { return S.pin >= 0 ? D.ids[S.pin] : null; },
  active: function () { return S.active ? views.indexOf(S.active) : -1; },
  panels: function () { return views.length; },
  linked: function () { return S.linked; },
  view: function (vi) {  // panel vi's zoom and its centre's offset from home, in units of its span
    var v = views[vi];
    return {z: v.z, x: (v.cx - v.home[0]) / v.span, y: (v.cy - v.home[1]) / v.span};
  },
  screen: function (vi, i) {  // client coordinates of point i in panel vi
    var v = views[vi], r = v.cv.getBoundingClientRect(), q = px(v, i), d = r.width / v.cv.width;
    return [r.left + q[0] * d, r.top + q[1] * d];
  }
};
if (root.id === 'tv') window.alvizViewer = api; else window.alvizStrip = api;
layout();
refilter();
}
start(document.getElementById('alviz-tsne'), document.getElementById('tv'));
start(document.getElementById('alviz-tsne-strip'), document.getElementById('tv-strip'));
})();
