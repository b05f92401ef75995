// The token view of `token-reward-annotate show --html`: draws one page of the embedded
// samples at a time. Everything numeric (scales, palette, colour values, token pieces) was
// decided by the Rust side (inspect/html.rs); this script filters, sorts and draws.
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('data').textContent);
  var $ = function (id) { return document.getElementById(id); };
  var STEPS = (D.palette.length - 1) / 2;
  var columns = {};
  D.columns.forEach(function (c) { columns[c.name] = c; });
  var state = { column: D.initial, side: '', iter: '', q: '', min: NaN, max: NaN, sort: 'order', pairs: false, page: 0, size: 20 };
  var haystack = D.samples.map(function (s) { return (D.prompts[s.p] + '\n' + s.resp).toLowerCase(); });
  var hasSides = D.samples.some(function (s) { return s.side != null; });
  var iterations = [];
  D.samples.forEach(function (s) { if (s.it != null && iterations.indexOf(s.it) < 0) iterations.push(s.it); });
  iterations.sort(function (a, b) { return a - b; });

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  // As fmt_value in inspect.rs: 5 decimals, float noise around 0 shown as +0.00000.
  function fmt(v) {
    if (v == null) return '–';
    if (Math.abs(v) < 5e-6) v = 0;
    return (v >= 0 ? '+' : '') + v.toFixed(5);
  }
  function paint(node, v, scale) {
    var i = STEPS;
    if (v != null && scale > 0) i = Math.round((Math.max(-1, Math.min(1, v / scale)) + 1) * STEPS);
    node.style.background = D.palette[i][0];
    if (D.palette[i][1]) node.style.color = '#fff';
  }

  function setup() {
    $('meta').textContent = '';
    D.meta.forEach(function (m) {
      $('meta').appendChild(document.createTextNode(m[0] + ' '));
      $('meta').appendChild(el('code', null, m[1]));
    });
    D.columns.forEach(function (c) { var o = el('option', null, c.name); o.value = c.name; $('color').appendChild(o); });
    $('color').value = state.column;
    iterations.forEach(function (it) { var o = el('option', null, String(it)); o.value = String(it); $('iter').appendChild(o); });
    if (!hasSides) { $('side-box').classList.add('hidden'); $('pairs-box').classList.add('hidden'); }
    if (iterations.length < 2) $('iter-box').classList.add('hidden');
    var on = function (id, ev, f) { $(id).addEventListener(ev, function () { f($(id)); state.page = 0; render(); }); };
    on('color', 'change', function (e) { state.column = e.value; });
    on('side', 'change', function (e) { state.side = e.value; });
    on('pairs', 'change', function (e) { state.pairs = e.checked; });
    on('iter', 'change', function (e) { state.iter = e.value; });
    on('q', 'input', function (e) { state.q = e.value.trim().toLowerCase(); });
    on('min', 'input', function (e) { state.min = e.value === '' ? NaN : Number(e.value); });
    on('max', 'input', function (e) { state.max = e.value === '' ? NaN : Number(e.value); });
    on('sort', 'change', function (e) { state.sort = e.value; });
    on('size', 'change', function (e) { state.size = Number(e.value); });
    ['prev', 'prev2'].forEach(function (id) { $(id).addEventListener('click', function () { turn(-1); }); });
    ['next', 'next2'].forEach(function (id) { $(id).addEventListener('click', function () { turn(1); }); });
    $('samples').addEventListener('mouseover', tooltip);
    $('samples').addEventListener('mousemove', place);
    $('samples').addEventListener('mouseout', function () { $('tip').classList.add('hidden'); });
  }

  function passes(i) {
    var s = D.samples[i];
    if (state.side && !state.pairs && s.side !== state.side) return false;
    if (state.iter !== '' && String(s.it) !== state.iter) return false;
    if (state.q && haystack[i].indexOf(state.q) < 0) return false;
    if (!isNaN(state.min) && s.ret < state.min) return false;
    if (!isNaN(state.max) && s.ret > state.max) return false;
    return true;
  }

  // A unit is what one row shows: [sample] or, in the pair view, [chosen, rejected] (annotate
  // numbers the sides of source row r as 2r and 2r+1); a side cut off by --max-samples is null.
  function units() {
    var list = [];
    if (state.pairs) {
      var rows = {};
      D.samples.forEach(function (s, i) {
        if (s.side == null) return;
        var k = Math.floor(s.id / 2);
        if (!(k in rows)) { rows[k] = [null, null]; list.push(rows[k]); }
        rows[k][s.side === 'rejected' ? 1 : 0] = i;
      });
      list = list.filter(function (u) { return u.some(function (i) { return i != null && passes(i); }); });
    } else {
      D.samples.forEach(function (s, i) { if (passes(i)) list.push([i]); });
    }
    if (state.sort !== 'order') {
      var parts = state.sort.split(':'), key = parts[0], dir = Number(parts[1]);
      var value = function (u) {
        var a = D.samples[u[0] != null ? u[0] : u[1]];
        if (key === 'margin') {
          var r = u.length > 1 && u[1] != null ? D.samples[u[1]] : null;
          return u[0] != null && r && a.dret != null && r.dret != null ? a.dret - r.dret : null;
        }
        return a[key];
      };
      var keyed = list.map(function (u, n) { return [value(u), n, u]; });
      keyed.sort(function (x, y) {
        if (x[0] == null || y[0] == null) return (x[0] == null) - (y[0] == null) || x[1] - y[1];
        return dir * (x[0] - y[0]) || x[1] - y[1];
      });
      list = keyed.map(function (k) { return k[2]; });
    }
    return list;
  }

  function turn(step) { state.page += step; render(); window.scrollTo(0, 0); }

  function render() {
    var list = units(), col = columns[state.column];
    var pages = Math.max(1, Math.ceil(list.length / state.size));
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    var box = $('samples');
    box.textContent = '';
    list.slice(state.page * state.size, (state.page + 1) * state.size).forEach(function (u) {
      if (!state.pairs) { box.appendChild(card(u[0], col)); return; }
      var row = el('div', 'pair');
      u.forEach(function (i, k) {
        row.appendChild(i == null ? el('div', 'sample missing', (k ? 'rejected' : 'chosen') + ' side not in this page (--max-samples)') : card(i, col));
      });
      box.appendChild(row);
    });
    var first = list.length ? state.page * state.size + 1 : 0;
    var status = (state.pairs ? 'pairs ' : 'samples ') + first + '–' + Math.min(list.length, (state.page + 1) * state.size) +
      ' of ' + list.length + ' matching · page ' + (state.page + 1) + ' of ' + pages;
    $('status').textContent = status;
    $('status2').textContent = status;
    $('prev').disabled = $('prev2').disabled = state.page === 0;
    $('next').disabled = $('next2').disabled = state.page >= pages - 1;
    $('counts').textContent = D.samples.length + ' of the table\'s ' + D.table_samples + ' samples (' + D.table_tokens +
      ' tokens) are in this page' + (D.samples.length < D.table_samples ? ' (show --max-samples N for more)' : '') +
      '. Hover a token for all its values.';
    legend(col);
  }

  function legend(col) {
    $('legend-name').textContent = col.label;
    $('legend-min').textContent = fmt(-col.scale);
    $('legend-max').textContent = fmt(col.scale);
    $('legend-rule').textContent = '(white = 0; scale ' + col.rule + ')';
    $('legend-bar').style.background = 'linear-gradient(to right,' + D.palette[0][0] + ',' + D.palette[STEPS][0] + ',' +
      D.palette[2 * STEPS][0] + ')';
  }

  function card(i, col) {
    var s = D.samples[i], c = el('div', 'sample'), head = el('div', 'head');
    head.appendChild(el('span', 'id', 'sample ' + s.id));
    if (s.side != null) head.appendChild(el('span', 'tag ' + s.side, s.side));
    if (s.it != null) head.appendChild(el('span', 'tag', 'iteration ' + s.it));
    var facts = [['tokens', String(s.tok.length)], ['return', fmt(s.ret)], ['dpo_return', fmt(s.dret)]];
    if (s.gold != null) facts.push(['gold_score', s.gold.toFixed(2)]);
    facts.forEach(function (f) {
      var span = el('span', null, f[0] + ' ');
      span.appendChild(el('b', null, f[1]));
      head.appendChild(span);
    });
    c.appendChild(head);
    c.appendChild(el('div', 'prompt', D.prompts[s.p]));
    var resp = el('div', 'resp'), values = s.c[col.name];
    for (var t = 0; t < s.tok.length; t++) {
      var flags = s.f.charCodeAt(t) - 48, span = el('span', 't');
      if (flags & 1) span.appendChild(el('span', 'sp', '·'));
      span.appendChild(document.createTextNode(s.tok[t]));
      paint(span, values ? values[t] : null, col.scale);
      span.dataset.s = i;
      span.dataset.t = t;
      resp.appendChild(span);
      if (flags & 2) resp.appendChild(document.createElement('br'));
    }
    if (s.sr != null && D.badge != null) badge(resp, 'sentence reward ' + fmt(s.sr), s.sr, D.badge);
    if (col.name === 'gold_credit' && s.grest != null) badge(resp, 'gold not on tokens ' + fmt(s.grest), s.grest, col.scale);
    c.appendChild(resp);
    return c;
  }

  function badge(parent, text, v, scale) {
    var b = el('span', 'badge', text);
    paint(b, v, scale);
    parent.appendChild(b);
  }

  function tooltip(ev) {
    var t = ev.target.closest ? ev.target.closest('.t') : null;
    if (!t) return;
    var s = D.samples[Number(t.dataset.s)], k = Number(t.dataset.t), table = el('table');
    var row = function (key, value) {
      var tr = el('tr');
      tr.appendChild(el('td', 'k', key));
      tr.appendChild(el('td', null, value));
      table.appendChild(tr);
    };
    row('position', String(k));
    row('token', JSON.stringify((s.f.charCodeAt(k) - 48) & 1 ? ' ' + s.tok[k] : s.tok[k]) + ' (id ' + s.tid[k] + ')');
    D.hover.forEach(function (h) {
      var values = s[h[1]][h[2]];
      row(h[0], fmt(values ? values[k] : null));
    });
    $('tip').textContent = '';
    $('tip').appendChild(table);
    $('tip').classList.remove('hidden');
    place(ev);
  }

  function place(ev) {
    var tip = $('tip'), x = ev.clientX + 14, y = ev.clientY + 16;
    if (x + tip.offsetWidth > window.innerWidth - 8) x = ev.clientX - tip.offsetWidth - 14;
    if (y + tip.offsetHeight > window.innerHeight - 8) y = ev.clientY - tip.offsetHeight - 16;
    tip.style.left = x + 'px';
    tip.style.top = y + 'px';
  }

  setup();
  render();
})();
