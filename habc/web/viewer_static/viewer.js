// habc viewer: the episode page (frames, timeline, plots, critic) and the run page's plots.
// Plain JavaScript, no libraries: the viewer runs where nothing can be fetched from outside.
(function () {
  'use strict';

  const SVGNS = 'http://www.w3.org/2000/svg';
  const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
                   '#7f7f7f', '#bcbd22', '#17becf'];
  const HUMAN = 'rgba(255, 127, 14, 0.18)';

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') node.textContent = v;
      else if (k === 'class') node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return '–';
    const d = digits === undefined ? 4 : digits;
    return Number(x).toFixed(d);
  }

  function niceStep(range, target) {
    const raw = range / Math.max(target, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw || 1)));
    for (const m of [1, 2, 5, 10]) if (raw <= m * mag) return m * mag;
    return 10 * mag;
  }

  // ---------------------------------------------------------------------------------------------
  // A small canvas chart: lines over steps (nulls are gaps), shaded bands, a cursor, hover, click.

  class Chart {
    constructor(container, opts) {
      this.opts = Object.assign({height: 110, series: [], bands: [], n: 0, yRange: null}, opts);
      this.box = el('div', {class: 'chart'});
      if (opts.id) this.box.id = opts.id;
      this.title = el('div', {class: 'chart-title'});
      this.canvas = el('canvas', {});
      this.box.append(this.title, this.canvas);
      container.append(this.box);
      this.cursor = null;
      this.hover = null;
      this.canvas.addEventListener('mousemove', (e) => { this.hover = this.stepAt(e); this.draw(); });
      this.canvas.addEventListener('mouseleave', () => { this.hover = null; this.draw(); });
      this.canvas.addEventListener('click', (e) => {
        const t = this.stepAt(e);
        if (t !== null && this.opts.onSeek) this.opts.onSeek(t);
      });
      this.computeRange();
      this.draw();
    }

    computeRange() {
      if (this.opts.yRange) { [this.ymin, this.ymax] = this.opts.yRange; return; }
      let lo = Infinity, hi = -Infinity;
      for (const s of this.opts.series) {
        for (const v of s.values) {
          if (v === null || v === undefined) continue;
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
      if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
      if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
      const pad = 0.06 * (hi - lo);
      this.ymin = lo - pad; this.ymax = hi + pad;
    }

    geometry() {
      const width = Math.max(this.box.clientWidth || 300, 120);
      return {width, height: this.opts.height, left: 48, right: 8, top: 6, bottom: 18};
    }

    stepAt(event) {
      const g = this.geometry();
      const rect = this.canvas.getBoundingClientRect();
      const x = event.clientX - rect.left;
      const n = this.opts.n;
      if (n <= 0) return null;
      const t = Math.round((x - g.left) / (g.width - g.left - g.right) * (n - 1));
      return Math.min(Math.max(t, 0), n - 1);
    }

    setCursor(t) { this.cursor = t; this.draw(); }

    frame(g) {
      const n = this.opts.n;
      const pw = g.width - g.left - g.right, ph = g.height - g.top - g.bottom;
      return {n, pw, ph, X: (t) => g.left + (n > 1 ? t / (n - 1) : 0) * pw,
              Y: (v) => g.top + (1 - (v - this.ymin) / (this.ymax - this.ymin)) * ph};
    }

    // The static part (bands, axes, lines) is drawn once per size into an offscreen canvas; a
    // cursor move only copies it and draws two lines (playback redraws every chart each frame).
    renderBase(g, dpr) {
      const base = document.createElement('canvas');
      base.width = g.width * dpr; base.height = g.height * dpr;
      const ctx = base.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const {n, pw, ph, X, Y} = this.frame(g);
      const half = n > 1 ? pw / (n - 1) / 2 : pw / 2;
      ctx.save();
      ctx.beginPath(); ctx.rect(g.left, g.top, pw, ph); ctx.clip();
      for (const b of this.opts.bands) {
        ctx.fillStyle = b.color;
        ctx.fillRect(X(b.start) - half, g.top, X(b.stop - 1) - X(b.start) + 2 * half, ph);
      }
      ctx.restore();
      // Axes and ticks.
      ctx.strokeStyle = '#ccc'; ctx.fillStyle = '#555'; ctx.lineWidth = 1;
      ctx.font = '10px system-ui, sans-serif';
      ctx.strokeRect(g.left, g.top, pw, ph);
      const ystep = niceStep(this.ymax - this.ymin, 3);
      ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
      for (let v = Math.ceil(this.ymin / ystep) * ystep; v <= this.ymax; v += ystep) {
        const y = Y(v);
        ctx.beginPath(); ctx.moveTo(g.left, y); ctx.lineTo(g.left + pw, y);
        ctx.strokeStyle = '#eee'; ctx.stroke();
        ctx.fillText(Math.abs(v) < 1e-12 ? '0' : +v.toPrecision(3), g.left - 4, y);
      }
      if (this.opts.zeroLine && this.ymin < 0 && this.ymax > 0) {
        ctx.beginPath(); ctx.moveTo(g.left, Y(0)); ctx.lineTo(g.left + pw, Y(0));
        ctx.strokeStyle = '#999'; ctx.stroke();
      }
      ctx.textAlign = 'center'; ctx.textBaseline = 'top';
      const xstep = Math.max(1, niceStep(n, 6));
      for (let t = 0; t < n; t += xstep) ctx.fillText(String(t), X(t), g.top + ph + 3);
      // Series.
      for (const s of this.opts.series) {
        ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.4;
        ctx.setLineDash(s.dash ? [4, 3] : []);
        ctx.beginPath();
        let pen = false;
        s.values.forEach((v, t) => {
          if (v === null || v === undefined) { pen = false; return; }
          if (pen) ctx.lineTo(X(t), Y(v)); else ctx.moveTo(X(t), Y(v));
          pen = true;
        });
        ctx.stroke();
        if (n < 2) s.values.forEach((v, t) => {
          if (v !== null) { ctx.fillStyle = s.color; ctx.fillRect(X(t) - 2, Y(v) - 2, 4, 4); }
        });
      }
      return base;
    }

    draw() {
      const g = this.geometry();
      const dpr = window.devicePixelRatio || 1;
      const key = `${g.width}x${g.height}@${dpr}`;
      if (this.baseKey !== key) {
        this.base = this.renderBase(g, dpr);
        this.baseKey = key;
        this.canvas.width = g.width * dpr; this.canvas.height = g.height * dpr;
        this.canvas.style.width = g.width + 'px'; this.canvas.style.height = g.height + 'px';
      }
      const ctx = this.canvas.getContext('2d');
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      ctx.drawImage(this.base, 0, 0);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const {ph, X} = this.frame(g);
      for (const [t, colour] of [[this.hover, '#bbb'], [this.cursor, '#000']]) {
        if (t === null || t === undefined) continue;
        ctx.strokeStyle = colour; ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(X(t), g.top); ctx.lineTo(X(t), g.top + ph); ctx.stroke();
      }
      const at = this.hover !== null ? this.hover : this.cursor;
      const parts = [this.opts.title];
      if (at !== null && at !== undefined) {
        parts.push(`step ${at}:`);
        for (const s of this.opts.series) parts.push(`${s.name} ${fmt(s.values[at], this.opts.digits)}`);
      }
      this.title.textContent = parts.join('  ');
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Episode page.

  function runsOf(values) {
    const runs = [];
    values.forEach((v, t) => {
      if (v === null || v === undefined) return;
      const last = runs[runs.length - 1];
      if (last && last.value === v && last.stop === t) last.stop = t + 1;
      else runs.push({start: t, stop: t + 1, value: v});
    });
    return runs;
  }

  function lighten(hex, alpha) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  async function getJSON(url) {
    const response = await fetch(url);
    let data;
    try { data = await response.json(); } catch (e) { data = {error: `${response.status} ${response.statusText}`}; }
    if (!response.ok && !data.error) data.error = `${response.status} ${response.statusText}`;
    return data;
  }

  async function episodeApp(root) {
    const ds = root.dataset.ds, index = Number(root.dataset.index);
    const query = root.dataset.query ? '&' + root.dataset.query : '';
    const base = `ds=${encodeURIComponent(ds)}&i=${index}`;
    const ep = await getJSON(`/api/episode?${base}${query}`);
    const state = {episode: ep, t: 0, critic: null, playing: false, charts: []};
    window.viewerState = state;
    if (ep.error) {
      root.prepend(el('p', {class: 'error-note', id: 'episode-error', text: ep.error}));
      return;
    }
    const T = ep.num_steps;
    document.getElementById('instruction').textContent = ep.instruction ? `“${ep.instruction}”` : '';
    document.getElementById('credit-source').textContent = `(from ${ep.credit_source})`;

    // Frames ------------------------------------------------------------------------------------
    const frames = document.getElementById('frames');
    const imgs = {};
    const preloaded = new Map();
    const frameURL = (cam, t) => `/api/frame?${base}&camera=${encodeURIComponent(cam)}&t=${t}`;
    if (!ep.cameras.length) {
      frames.append(el('p', {class: 'empty', id: 'no-cameras',
        text: 'No camera images in this dataset (state observations only).'}));
    }
    for (const cam of ep.cameras) {
      const img = el('img', {class: 'frame', 'data-camera': cam.name, alt: cam.name});
      img.addEventListener('load', () => { img.classList.toggle('native', img.naturalWidth >= 256); }, {once: true});
      const shape = cam.shape ? ` ${cam.shape[0]}×${cam.shape[1]}` : '';
      frames.append(el('figure', {}, [img, el('figcaption', {text: cam.name + shape})]));
      imgs[cam.name] = img;
    }
    function preload(t) {
      for (const cam of ep.cameras) {
        const key = cam.name + ':' + t;
        if (!preloaded.has(key)) {
          const im = new Image(); im.src = frameURL(cam.name, t); preloaded.set(key, im);
          if (preloaded.size > 4000) preloaded.delete(preloaded.keys().next().value);
        }
      }
    }
    function loaded(t) {
      return ep.cameras.every((cam) => { const im = preloaded.get(cam.name + ':' + t); return im && im.complete; });
    }

    // Controls ------------------------------------------------------------------------------------
    const scrub = document.getElementById('scrub');
    scrub.max = String(Math.max(T - 1, 0));
    const label = document.getElementById('step-label');
    const readout = document.getElementById('readout');
    const play = document.getElementById('play');
    const fps = document.getElementById('fps');
    const kindName = (k) => (k === null || k === undefined) ? 'none (final step)' : ep.kind_names[k];

    function renderReadout(t) {
      const rows = [
        ['step', `${t} of ${T - 1}`], ['controller', ep.is_intervention[t] ? 'human' : 'policy'],
        ['window kind', kindName(ep.kinds[t])],
        ['operator steps in the chunk', t < ep.human_steps.length ? ep.human_steps[t] : '–'],
        ['reward', fmt(ep.reward[t], 2)], ['terminal', ep.is_terminal[t] ? 'yes' : 'no'],
      ];
      if (t < T - 1) {
        const a = ep.action[t], p = ep.policy_action[t];
        let diff = 0;
        a.forEach((v, d) => { if (v !== null && p[d] !== null) diff = Math.max(diff, Math.abs(v - p[d])); });
        rows.push(['max |action − policy action|', fmt(diff, 4)]);
      }
      const c = state.critic;
      if (c && !c.error) {
        for (const key of c.series) {
          const v = t < c[key].length ? c[key][t] : null;
          rows.push([SERIES_LABELS[key] ? SERIES_LABELS[key].short : key, fmt(v, 4), key]);
        }
      }
      readout.replaceChildren(el('table', {id: 'readout-table'}, rows.map(([k, v, key]) =>
        el('tr', key ? {'data-key': key} : {}, [el('th', {text: k}), el('td', {text: String(v)})]))));
    }

    function setStep(t, fromScrub) {
      t = Math.min(Math.max(Math.round(t), 0), T - 1);
      state.t = t;
      if (!fromScrub) scrub.value = String(t);
      label.textContent = `step ${t} / ${T - 1} · ${ep.is_intervention[t] ? 'human' : 'policy'} · ${kindName(ep.kinds[t])}`;
      for (const cam of ep.cameras) imgs[cam.name].src = frameURL(cam.name, t);
      for (let k = 1; k <= 8 && t + k < T; k++) preload(t + k);
      for (const chart of state.charts) chart.setCursor(t);
      drawTimelineCursor(t);
      renderReadout(t);
    }
    state.setStep = setStep;

    scrub.addEventListener('input', () => setStep(Number(scrub.value), true));
    document.getElementById('step-back').addEventListener('click', () => setStep(state.t - 1));
    document.getElementById('step-fwd').addEventListener('click', () => setStep(state.t + 1));
    let timer = null;
    function stop() { state.playing = false; play.innerHTML = '&#9654; play'; if (timer) clearTimeout(timer); timer = null; }
    function tick() {
      if (!state.playing) return;
      if (state.t >= T - 1) { stop(); return; }
      if (!ep.cameras.length || loaded(state.t + 1)) setStep(state.t + 1);
      else preload(state.t + 1);  // Buffering: wait for the next frames.
      timer = setTimeout(tick, 1000 / Number(fps.value));
    }
    play.addEventListener('click', () => {
      if (state.playing) { stop(); return; }
      if (state.t >= T - 1) setStep(0);
      state.playing = true; play.innerHTML = '&#10073;&#10073; pause'; tick();
    });
    document.addEventListener('keydown', (e) => {
      if (['INPUT', 'SELECT', 'TEXTAREA'].includes(document.activeElement.tagName) &&
          document.activeElement !== scrub) return;
      if (e.key === ' ') { e.preventDefault(); play.click(); }
      else if (e.key === 'ArrowLeft') { e.preventDefault(); setStep(state.t - 1); }
      else if (e.key === 'ArrowRight') { e.preventDefault(); setStep(state.t + 1); }
    });

    // Timeline ------------------------------------------------------------------------------------
    const timeline = document.getElementById('timeline');
    const GUTTER = 96;
    let cursorLine = null;
    function tx(t) {
      const w = timeline.clientWidth || 800;
      return GUTTER + (w - GUTTER - 6) * t / Math.max(T, 1);
    }
    function drawTimeline() {
      timeline.replaceChildren();
      const rowY = {controller: 4, kind: 30, reward: 56, weight: 74};
      const text = (y, s) => { const n = svg('text', {x: 4, y: y + 13, class: 'tl-label'}); n.textContent = s; timeline.append(n); };
      text(rowY.controller, 'controller'); text(rowY.kind, 'window kind'); text(rowY.reward, 'reward / end');
      for (const seg of ep.segments) {
        const r = svg('rect', {x: tx(seg.start), y: rowY.controller, width: Math.max(tx(seg.stop) - tx(seg.start), 1),
          height: 20, class: `segment ${seg.controller}`, 'data-start': seg.start, 'data-stop': seg.stop,
          'data-controller': seg.controller});
        const title = svg('title', {}); title.textContent = `${seg.controller}: steps ${seg.start}–${seg.stop - 1}`;
        r.append(title); timeline.append(r);
      }
      for (const run of runsOf(ep.kinds)) {
        const name = ep.kind_names[run.value];
        const r = svg('rect', {x: tx(run.start), y: rowY.kind, width: Math.max(tx(run.stop) - tx(run.start), 1),
          height: 20, class: `kind kind-${name}`, fill: ep.kind_colours[name], 'data-start': run.start,
          'data-stop': run.stop, 'data-kind': name});
        const title = svg('title', {}); title.textContent = `${name}: windows at steps ${run.start}–${run.stop - 1}`;
        r.append(title); timeline.append(r);
      }
      ep.reward.forEach((v, t) => {
        if (v) timeline.append(svg('rect', {x: tx(t), y: rowY.reward, width: Math.max(tx(t + 1) - tx(t), 2), height: 14, class: 'reward-mark'}));
        if (ep.is_terminal[t]) timeline.append(svg('rect', {x: tx(t), y: rowY.reward + 14, width: Math.max(tx(t + 1) - tx(t), 2), height: 4, class: 'terminal-mark'}));
      });
      timeline.append(svg('rect', {x: tx(T - 1), y: rowY.reward + 16, width: Math.max(tx(T) - tx(T - 1), 2), height: 2, class: 'end-mark'}));
      const c = state.critic;
      if (c && !c.error && c.weight) {
        text(rowY.weight, 'actor weight');
        const max = Math.max(1e-6, ...c.weight.filter((v) => v !== null));
        c.weight.forEach((v, t) => {
          if (v === null) return;
          const h = 18 * v / max;
          timeline.append(svg('rect', {x: tx(t), y: rowY.weight + 18 - h, width: Math.max(tx(t + 1) - tx(t) - 0.3, 0.7), height: h, class: 'weight-bar'}));
        });
        timeline.setAttribute('height', 96);
      }
      cursorLine = svg('line', {class: 'tl-cursor', y1: 0, y2: 96});
      timeline.append(cursorLine);
      drawTimelineCursor(state.t);
    }
    function drawTimelineCursor(t) {
      if (!cursorLine) return;
      const x = (tx(t) + tx(t + 1)) / 2;
      cursorLine.setAttribute('x1', x); cursorLine.setAttribute('x2', x);
    }
    timeline.addEventListener('click', (e) => {
      const rect = timeline.getBoundingClientRect();
      const x = e.clientX - rect.left;
      if (x < GUTTER) return;
      setStep(Math.floor((x - GUTTER) / ((timeline.clientWidth || 800) - GUTTER - 6) * T));
    });

    // Plots ---------------------------------------------------------------------------------------
    const humanBands = ep.segments.filter((s) => s.controller === 'human')
      .map((s) => ({start: s.start, stop: s.stop, color: HUMAN}));
    const seek = (t) => setStep(t);
    const column = (rows, d, upto) => rows.map((row, t) => (t < upto ? row[d] : null));
    const actionBox = document.getElementById('action-plots');
    const A = ep.action.length ? ep.action[0].length : 0;
    for (let d = 0; d < A; d++) {
      state.charts.push(new Chart(actionBox, {
        id: `action-${d}`, title: `action[${d}]`, n: T, bands: humanBands, onSeek: seek, digits: 3,
        series: [{name: 'executed', values: column(ep.action, d, T - 1), color: COLOURS[0]},
                 {name: 'policy', values: column(ep.policy_action, d, T - 1), color: COLOURS[3], dash: true}]}));
    }
    const stateBox = document.getElementById('state-plots');
    for (const [key, rows] of [['state', ep.state], ['privileged', ep.privileged]]) {
      if (!rows || !rows.length) continue;
      for (let d = 0; d < rows[0].length; d++) {
        state.charts.push(new Chart(stateBox, {
          id: `${key}-${d}`, title: `${key}[${d}]`, n: T, bands: humanBands, onSeek: seek, digits: 3, height: 90,
          series: [{name: key, values: column(rows, d, T), color: COLOURS[key === 'state' ? 2 : 4]}]}));
      }
    }

    // Critic --------------------------------------------------------------------------------------
    const select = document.getElementById('checkpoint');
    const pathInput = document.getElementById('checkpoint-path');
    const status = document.getElementById('critic-status');
    const criticBox = document.getElementById('critic-plots');
    const wanted = new URLSearchParams(location.search).get('checkpoint');
    const listed = await getJSON('/api/checkpoints');
    const checkpoints = listed.checkpoints || [];
    for (const c of checkpoints) {
      const meta = c.meta || {};
      const where = meta.stage ? ` · ${meta.stage}` : '';
      select.append(el('option', {value: c.path, text: `step ${c.step}${where}`}));
    }
    if (!checkpoints.length) select.append(el('option', {value: '', text: 'none found (type a path)'}));
    else select.value = checkpoints[checkpoints.length - 1].path;
    if (wanted) {
      if (checkpoints.some((c) => c.path === wanted)) select.value = wanted; else pathInput.value = wanted;
    }

    let criticCharts = [];
    async function evaluate() {
      const checkpoint = pathInput.value.trim() || select.value;
      status.className = 'status'; status.textContent = 'evaluating the critic… (the first call loads and compiles it)';
      const started = performance.now();
      const c = await getJSON(`/api/critic?${base}&checkpoint=${encodeURIComponent(checkpoint)}`);
      state.critic = c;
      state.charts = state.charts.filter((ch) => !criticCharts.includes(ch));
      criticCharts = [];
      criticBox.replaceChildren();
      if (c.error) {
        status.className = 'status error-note'; status.id = 'critic-status'; status.textContent = c.error;
        drawTimeline(); renderReadout(state.t); return;
      }
      const info = c.checkpoint;
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      let note = `step ${info.step} (${info.method}${info.meta && info.meta.stage ? ', ' + info.meta.stage : ''})` +
        ` · ${c.cached ? 'cached' : secs + ' s'} · windows anchored at each step; kinds from the checkpoint's credit settings`;
      const same = ['horizon', 'next_offset', 'min_human_steps', 'naive'].every((k) => info.credit[k] === ep.credit[k]);
      if (!same) note += ` (${JSON.stringify(info.credit)}, which differ from the timeline's)`;
      status.textContent = note;
      const kindBands = runsOf(c.kind).map((r) => ({start: r.start, stop: r.stop,
        color: lighten(ep.kind_colours[ep.kind_names[r.value]], 0.16)}));
      for (const key of c.series) {
        const labels = SERIES_LABELS[key] || {long: key};
        const long = key === 'gate' && !info.method.startsWith('habc') ? 'online weight' : labels.long;
        const values = c[key].concat([null]);
        const chart = new Chart(criticBox, {id: `critic-${key}`, title: long, n: T, bands: kindBands, onSeek: seek,
          digits: 4, zeroLine: true, yRange: labels.range || null, height: 100,
          series: [{name: key, values, color: labels.colour || COLOURS[0]}]});
        criticCharts.push(chart); state.charts.push(chart);
      }
      for (const chart of criticCharts) chart.setCursor(state.t);
      drawTimeline(); renderReadout(state.t);
    }
    document.getElementById('evaluate').addEventListener('click', evaluate);

    window.addEventListener('resize', () => { drawTimeline(); for (const ch of state.charts) ch.draw(); });
    for (const d of document.querySelectorAll('details')) d.addEventListener('toggle', () => { for (const ch of state.charts) ch.draw(); });
    drawTimeline();
    setStep(0);
    state.ready = true;
    if (wanted) await evaluate();
  }

  const SERIES_LABELS = {
    p_v: {short: 'p_v', long: 'p_v = P(success) (viability)', range: [0, 1], colour: '#2ca02c'},
    v_e: {short: 'V_e', long: 'V_e = −decisions to success', colour: '#9467bd'},
    a_v: {short: 'A_v', long: 'A_v (viability advantage, logit)', colour: '#17becf'},
    a_e: {short: 'A_e', long: 'A_e (efficiency advantage)', colour: '#8c564b'},
    gate: {short: 'g_t', long: 'g_t = 1 + tanh((1−p_v)A_v + p_v A_e)', colour: '#d62728'},
    value: {short: 'V', long: 'value', colour: '#9467bd'},
    advantage: {short: 'A', long: 'advantage', colour: '#17becf'},
    weight: {short: 'actor weight', long: 'actor weight, before normalisation', colour: '#1f77b4'},
  };

  // ---------------------------------------------------------------------------------------------
  // Run page: success per round with Wilson intervals, length of successes, gate histograms.

  function pointChart(container, opts) {
    const box = el('div', {class: 'chart'});
    if (opts.id) box.id = opts.id;
    box.append(el('div', {class: 'chart-title', text: opts.title}));
    const canvas = el('canvas', {});
    box.append(canvas); container.append(box);
    const width = Math.max(box.clientWidth || 360, 200), height = 180;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr; canvas.height = height * dpr;
    canvas.style.width = width + 'px'; canvas.style.height = height + 'px';
    const ctx = canvas.getContext('2d'); ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const g = {left: 44, right: 10, top: 8, bottom: 22};
    const pw = width - g.left - g.right, ph = height - g.top - g.bottom;
    const xs = opts.points.map((p) => p.x);
    const xmin = Math.min(...xs, 0), xmax = Math.max(...xs, 1);
    let [ymin, ymax] = opts.yRange || [Math.min(...opts.points.map((p) => p.lo)), Math.max(...opts.points.map((p) => p.hi))];
    if (!Number.isFinite(ymin)) { ymin = 0; ymax = 1; }
    if (ymax - ymin < 1e-9) { ymin -= 1; ymax += 1; }
    const X = (x) => g.left + (x - xmin + 0.5) / (xmax - xmin + 1) * pw;
    const Y = (y) => g.top + (1 - (y - ymin) / (ymax - ymin)) * ph;
    ctx.strokeStyle = '#ccc'; ctx.strokeRect(g.left, g.top, pw, ph);
    ctx.fillStyle = '#555'; ctx.font = '10px system-ui, sans-serif';
    ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
    const step = niceStep(ymax - ymin, 4);
    for (let v = Math.ceil(ymin / step) * step; v <= ymax + 1e-9; v += step) {
      ctx.fillText(+v.toPrecision(3) + (opts.unit || ''), g.left - 4, Y(v));
      ctx.strokeStyle = '#eee'; ctx.beginPath(); ctx.moveTo(g.left, Y(v)); ctx.lineTo(g.left + pw, Y(v)); ctx.stroke();
    }
    ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    for (let x = xmin; x <= xmax; x++) ctx.fillText(String(x), X(x), g.top + ph + 4);
    ctx.strokeStyle = opts.colour; ctx.fillStyle = opts.colour; ctx.lineWidth = 1.5;
    ctx.beginPath();
    opts.points.forEach((p, i) => { if (i) ctx.lineTo(X(p.x), Y(p.y)); else ctx.moveTo(X(p.x), Y(p.y)); });
    ctx.stroke();
    for (const p of opts.points) {
      ctx.beginPath(); ctx.moveTo(X(p.x), Y(p.lo)); ctx.lineTo(X(p.x), Y(p.hi)); ctx.stroke();
      for (const y of [p.lo, p.hi]) { ctx.beginPath(); ctx.moveTo(X(p.x) - 4, Y(y)); ctx.lineTo(X(p.x) + 4, Y(y)); ctx.stroke(); }
      ctx.beginPath(); ctx.arc(X(p.x), Y(p.y), 3.5, 0, 2 * Math.PI); ctx.fill();
    }
    if (!opts.points.length) { ctx.fillStyle = '#888'; ctx.fillText(opts.empty || 'nothing yet', g.left + pw / 2, g.top + ph / 2); }
  }

  function gateHistogram(container, gates, colours) {
    const width = Math.max(container.clientWidth || 320, 220), height = 130;
    const canvas = el('canvas', {});
    container.append(canvas);
    const dpr = window.devicePixelRatio || 1;
    canvas.width = width * dpr; canvas.height = height * dpr;
    canvas.style.width = width + 'px'; canvas.style.height = height + 'px';
    const ctx = canvas.getContext('2d'); ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const g = {left: 30, right: 6, top: 6, bottom: 18};
    const pw = width - g.left - g.right, ph = height - g.top - g.bottom;
    const edges = gates.edges, bins = edges.length - 1;
    let max = 1;
    for (const k of Object.values(gates.kinds)) for (const c of k.hist) max = Math.max(max, c);
    ctx.strokeStyle = '#ccc'; ctx.strokeRect(g.left, g.top, pw, ph);
    // Stacked by kind: each bin's bar is the windows of every kind in it.
    const kinds = Object.entries(gates.kinds);
    max = 1;
    for (let i = 0; i < bins; i++) max = Math.max(max, kinds.reduce((sum, [, k]) => sum + k.hist[i], 0));
    for (let i = 0; i < bins; i++) {
      let base = 0;
      for (const [name, k] of kinds) {
        const h = ph * k.hist[i] / max;
        ctx.fillStyle = colours[name];
        ctx.fillRect(g.left + pw * i / bins, g.top + ph - base - h, pw / bins - 0.5, h);
        base += h;
      }
    }
    ctx.fillStyle = '#555'; ctx.font = '10px system-ui, sans-serif'; ctx.textAlign = 'center'; ctx.textBaseline = 'top';
    for (const v of [0, 0.5, 1, 1.5, 2]) ctx.fillText(String(v), g.left + pw * v / 2, g.top + ph + 3);
    ctx.textAlign = 'right'; ctx.textBaseline = 'top'; ctx.fillText(String(max), g.left - 3, g.top);
  }

  function runPage(data) {
    const box = document.getElementById('run-plots');
    const evals = data.rounds.filter((r) => r.eval);
    if (box) {
      pointChart(box, {id: 'success-plot', title: 'Success rate per round (Wilson 95% interval)', unit: '%',
        colour: '#1f77b4', yRange: [0, 100], points: evals.map((r) => ({x: r.round,
          y: 100 * r.eval.success_rate, lo: 100 * r.eval.ci_low, hi: 100 * r.eval.ci_high}))});
      const lengths = evals.filter((r) => r.eval.mean_success_length !== null && r.eval.mean_success_length !== undefined);
      pointChart(box, {id: 'length-plot', title: 'Length of successful episodes (mean ± std)', colour: '#2ca02c',
        empty: 'no successful evaluation episodes', points: lengths.map((r) => ({x: r.round,
          y: r.eval.mean_success_length, lo: r.eval.mean_success_length - (r.eval.std_success_length || 0),
          hi: r.eval.mean_success_length + (r.eval.std_success_length || 0)}))});
    }
    for (const g of data.gates) {
      const node = document.querySelector(`.gate-hist[data-round="${g.round}"]`);
      if (node) gateHistogram(node, g, data.kind_colours);
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    const app = document.getElementById('episode-app');
    if (app) episodeApp(app).catch((e) => {
      app.prepend(el('p', {class: 'error-note', id: 'episode-error', text: `The page failed: ${e}`}));
    });
    const progress = document.getElementById('index-progress');
    if (progress) {
      // The list is filtered while episodes are still being indexed: reload once they all are.
      const poll = async () => {
        const st = await getJSON('/api/status');
        const sets = Object.values(st.datasets || {});
        const done = sets.reduce((a, d) => a + d.indexed, 0), total = sets.reduce((a, d) => a + d.episodes, 0);
        if (done >= total) location.reload();
        else { progress.firstChild.textContent = `Indexing: ${done} of ${total} episodes read so far; the filters cover those. `; setTimeout(poll, 1000); }
      };
      setTimeout(poll, 1000);
    }
    const run = document.getElementById('run-data');
    if (run) runPage(JSON.parse(run.textContent));
  });
})();
