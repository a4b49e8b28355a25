// Draws the grant timeline from the JSON block #latch-data. Builds every node with
// createElement/textContent: record values are claims and never become markup.
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('latch-data').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var ENDED = {
    job_finished: ['var(--finished)', 'ended by job finish'],
    expired_sweep: ['var(--sweep)', 'expired, removed by the sweep'],
    expired_ttl: ['var(--ttl)', 'expired, removed on the TTL stream'],
    active: ['var(--active)', 'active at export time'],
    other: ['var(--other)', 'ended otherwise']
  };
  var MARKS = {
    denied: ['var(--denied)', 'denial'],
    revoke_failed: ['var(--failed)', 'revoke failure'],
    drift_repaired: ['var(--drift)', 'drift repair']
  };
  var ROW_H = 10, ROW_GAP = 2, MAX_ROWS = 8, MARK_H = 12, LANE_PAD = 6, LEFT = 170, TOP = 26;
  var view = data.range.slice();
  var root = document.getElementById('timeline');
  var tip = document.getElementById('tooltip');

  function svg(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function iso(t) { return new Date(t * 1000).toISOString().replace('.000Z', 'Z'); }
  function dur(s) {
    s = Math.max(0, Math.round(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return h > 0 ? h + 'h' + String(m).padStart(2, '0') + 'm' : m + 'm' + String(s % 60).padStart(2, '0') + 's';
  }
  function ended(b) { return ENDED[b.ended] ? b.ended : 'other'; }

  // Lanes: one per role with something to show; bars packed into rows so overlaps stay visible.
  var lanes = data.roles.map(function (name, i) { return { name: name, index: i, rows: [], bars: [], marks: [] }; });
  data.bars.slice().sort(function (a, b) { return a.start - b.start; }).forEach(function (b) {
    var lane = lanes[b.role];
    if (!lane) { return; }
    var row = -1, best = 0;
    for (var r = 0; r < lane.rows.length; r++) {
      if (lane.rows[r] <= b.start) { row = r; break; }
      if (lane.rows[r] < lane.rows[best]) { best = r; }
    }
    if (row < 0) { row = lane.rows.length < MAX_ROWS ? lane.rows.length : best; }
    lane.rows[row] = Math.max(lane.rows[row] || 0, b.end);
    lane.bars.push({ b: b, row: row });
  });
  data.markers.forEach(function (m) { if (lanes[m.role]) { lanes[m.role].marks.push(m); } });
  lanes = lanes.filter(function (l) { return l.bars.length || l.marks.length; })
    .sort(function (a, b) { return a.name < b.name ? -1 : a.name > b.name ? 1 : 0; });

  function legend() {
    var box = document.getElementById('legend');
    function item(color, label, shape) {
      var s = document.createElement('span');
      var sw = document.createElement('span');
      sw.className = 'sw';
      sw.style.background = color;
      if (shape === 'tick') { sw.style.width = '3px'; }
      if (shape === 'dot') { sw.style.width = '10px'; sw.style.borderRadius = '50%'; }
      if (shape === 'diamond') { sw.style.width = '9px'; sw.style.height = '9px'; sw.style.transform = 'rotate(45deg)'; }
      s.appendChild(sw);
      s.appendChild(document.createTextNode(label));
      box.appendChild(s);
    }
    Object.keys(ENDED).forEach(function (k) { item(ENDED[k][0], ENDED[k][1]); });
    item(MARKS.denied[0], MARKS.denied[1], 'tick');
    item(MARKS.revoke_failed[0], MARKS.revoke_failed[1], 'dot');
    item(MARKS.drift_repaired[0], MARKS.drift_repaired[1], 'diamond');
  }

  function zoomButtons() {
    var box = document.createElement('div');
    box.id = 'zoom';
    box.appendChild(document.createTextNode('Show:'));
    [['all', 0], ['last 7 days', 7 * 86400], ['last 24 hours', 86400], ['last hour', 3600]].forEach(function (z) {
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = z[0];
      b.addEventListener('click', function () {
        view = z[1] ? [Math.max(data.range[0], data.range[1] - z[1]), data.range[1]] : data.range.slice();
        render();
      });
      box.appendChild(b);
    });
    root.parentNode.insertBefore(box, root);
  }

  function showTip(ev, lines) {
    while (tip.firstChild) { tip.removeChild(tip.firstChild); }
    lines.forEach(function (l) { var d = document.createElement('div'); d.textContent = l; tip.appendChild(d); });
    tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 430) + 'px';
    tip.style.top = (ev.clientY + 14) + 'px';
  }
  function hideTip() { tip.hidden = true; }

  function ticks(t0, t1, width) {
    var steps = [3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400];
    var step = steps[steps.length - 1];
    for (var i = 0; i < steps.length; i++) {
      if ((steps[i] / (t1 - t0)) * width >= 70) { step = steps[i]; break; }
    }
    var out = [];
    for (var t = Math.ceil(t0 / step) * step; t <= t1; t += step) { out.push(t); }
    return { step: step, list: out };
  }

  function render() {
    while (root.firstChild) { root.removeChild(root.firstChild); }
    var width = Math.max(root.clientWidth || 1200, 600);
    var plot = width - LEFT - 12;
    var t0 = view[0], t1 = view[1];
    var x = function (t) { return LEFT + ((t - t0) / (t1 - t0)) * plot; };
    var height = TOP + 8;
    lanes.forEach(function (l) {
      l.y = height;
      l.h = Math.max(1, l.rows.length) * (ROW_H + ROW_GAP) + MARK_H + LANE_PAD * 2;
      height += l.h;
    });
    if (!lanes.length) { height += 30; }
    var s = svg('svg', { width: width, height: height, viewBox: '0 0 ' + width + ' ' + height, role: 'img',
      'aria-label': 'Timeline of grants per role' }, root);
    var clip = svg('clipPath', { id: 'plot-clip' }, svg('defs', {}, s));
    svg('rect', { x: LEFT, y: 0, width: plot, height: height }, clip);
    var axis = svg('g', { class: 'axis' }, s);
    var tk = ticks(t0, t1, plot);
    tk.list.forEach(function (t) {
      svg('line', { x1: x(t), x2: x(t), y1: TOP - 6, y2: height }, axis);
      if (x(t) + 72 > width) { return; }
      var label = svg('text', { x: x(t) + 3, y: TOP - 10 }, axis);
      var iso8601 = iso(t);
      label.textContent = tk.step >= 86400 ? iso8601.slice(0, 10) : iso8601.slice(5, 10) + ' ' + iso8601.slice(11, 16);
    });
    if (data.export && data.export >= t0 && data.export <= t1) {
      svg('line', { x1: x(data.export), x2: x(data.export), y1: TOP - 6, y2: height, stroke: 'var(--active)',
        'stroke-dasharray': '4 3' }, s);
    }
    var drawn = 0, marks = 0;
    lanes.forEach(function (l, i) {
      svg('rect', { x: 0, y: l.y, width: width, height: l.h, fill: i % 2 ? '#fafbfc' : '#ffffff' }, s);
      var name = l.name.split('/').pop();
      var label = svg('text', { class: 'lane-label', x: 8, y: l.y + l.h / 2 + 4 }, s);
      label.textContent = name.length > 24 ? name.slice(0, 23) + '\u2026' : name;
      svg('title', {}, label).textContent = l.name;
      var g = svg('g', { 'clip-path': 'url(#plot-clip)', 'data-role': l.name }, s);
      l.bars.forEach(function (e) {
        var b = e.b;
        if (b.end < t0 || b.start > t1) { return; }
        var k = ended(b);
        var r = svg('rect', { class: 'bar', 'data-ended': b.ended, x: x(b.start), y: l.y + LANE_PAD + e.row * (ROW_H + ROW_GAP),
          width: Math.max(1.5, x(b.end) - x(b.start)), height: ROW_H, rx: 1.5, fill: ENDED[k][0] }, g);
        r.addEventListener('mousemove', function (ev) {
          showTip(ev, [b.grant ? 'grant ' + b.grant : 'grant', b.job, (b.actor ? 'actor ' + b.actor + ', ' : '') + 'set ' + b.set,
            iso(b.start) + ' \u2192 ' + iso(b.end) + ' (' + dur(b.end - b.start) + ')', ENDED[k][1] + (k === 'other' ? ': ' + b.ended : '')]);
        });
        r.addEventListener('mouseleave', hideTip);
        drawn++;
      });
      var my = l.y + l.h - LANE_PAD - MARK_H;
      l.marks.forEach(function (m) {
        if (m.at < t0 || m.at > t1) { return; }
        var c = (MARKS[m.kind] || MARKS.denied)[0], mx = x(m.at), e;
        if (m.kind === 'drift_repaired') {
          e = svg('polygon', { points: [mx, my, mx + 5, my + 6, mx, my + 12, mx - 5, my + 6].join(' '), fill: c }, g);
        } else if (m.kind === 'revoke_failed') {
          e = svg('circle', { cx: mx, cy: my + 6, r: 4.5, fill: c }, g);
        } else {
          e = svg('rect', { x: mx - 1, y: my + 1, width: 2, height: 10, fill: c }, g);
        }
        e.setAttribute('class', 'marker marker-' + m.kind);
        e.addEventListener('mousemove', function (ev) {
          showTip(ev, [(MARKS[m.kind] || MARKS.denied)[1] + ': ' + m.reason, m.label, iso(m.at)]);
        });
        e.addEventListener('mouseleave', hideTip);
        marks++;
      });
    });
    if (!lanes.length) {
      var none = svg('text', { x: LEFT, y: TOP + 20, class: 'lane-label' }, s);
      none.textContent = 'No grants, denials or repairs match.';
    }
    s.setAttribute('data-bars-rendered', String(drawn));
    s.setAttribute('data-markers-rendered', String(marks));

    // Drag to zoom, double-click to zoom out.
    var sel = null, from = 0;
    function tx(ev) { var r = s.getBoundingClientRect(); return Math.min(Math.max(ev.clientX - r.left, LEFT), LEFT + plot); }
    s.addEventListener('mousedown', function (ev) {
      from = tx(ev);
      sel = svg('rect', { x: from, y: 0, width: 0, height: height, fill: '#1565c022', stroke: '#1565c0' }, s);
    });
    s.addEventListener('mousemove', function (ev) {
      if (!sel) { return; }
      var to = tx(ev);
      sel.setAttribute('x', Math.min(from, to));
      sel.setAttribute('width', Math.abs(to - from));
    });
    s.addEventListener('mouseup', function (ev) {
      if (!sel) { return; }
      var to = tx(ev);
      sel = null;
      if (Math.abs(to - from) < 4) { render(); return; }
      var a = t0 + ((Math.min(from, to) - LEFT) / plot) * (t1 - t0);
      var b = t0 + ((Math.max(from, to) - LEFT) / plot) * (t1 - t0);
      view = [Math.floor(a), Math.max(Math.ceil(b), Math.floor(a) + 60)];
      render();
    });
    s.addEventListener('dblclick', function () { view = data.range.slice(); render(); });
  }

  legend();
  zoomButtons();
  render();
  var pending = 0;
  window.addEventListener('resize', function () {
    clearTimeout(pending);
    pending = setTimeout(render, 100);
  });
  document.body.setAttribute('data-rendered', 'yes');
})();
