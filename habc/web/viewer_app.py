"""The viewer's web app (FastAPI): run page, episode list, episode page, and their JSON API.

Pages are HTML rendered here; the episode page's frames, timeline and plots are drawn in the
browser by ``viewer_static/viewer.js`` from ``/api/episode`` and ``/api/critic``. Every error a
user can cause (a missing dataset, a bad index, a checkpoint that does not fit) comes back as a
page or a JSON ``{"error": ...}`` with the reason; anything else is logged with its traceback in
the terminal and shown as a one-line message, never as a traceback in the browser.
"""

from __future__ import annotations

import html
import os
import sys
import time
import traceback
import urllib.parse
from typing import Any, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.responses import (FileResponse, HTMLResponse, JSONResponse, PlainTextResponse,
                               RedirectResponse, Response)
from starlette.exceptions import HTTPException as StarletteHTTPException

from habc.labeling import SampleKind
from habc.web import viewer_critic
from habc.web import viewer_data as vd
from habc.web.viewer_data import ViewerError

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'viewer_static')
STATIC_FILES = {'viewer.js': 'text/javascript', 'viewer.css': 'text/css'}
PAGE_SIZES = (25, 50, 100, 200)
# A filtered list waits this long for the index (helping the scan) before it answers with the
# episodes read so far and a progress notice.
FILTER_WAIT_S = 1.5
KIND_COLOURS = {'SFT': '#8c8c8c', 'SUCCESS': '#2ca02c', 'FAILURE': '#d62728',
                'INTERVENTION': '#ff7f0e', 'UNLABELLED': '#c7c7c7'}


def esc(x) -> str:
  return html.escape('' if x is None else str(x), quote=True)


def qs(**params) -> str:
  return urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, '')})


def fmt(x, digits: int = 3) -> str:
  if x is None:
    return '–'
  try:
    v = float(x)
  except (TypeError, ValueError):
    return esc(x)
  if v != v:  # NaN
    return '–'
  return f'{v:.{digits}f}'


def pct(x) -> str:
  return '–' if x is None else f'{100 * float(x):.1f}%'


# ------------------------------------------------------------------------------------------------
# Page frame.


def layout(title: str, body: str, catalog: vd.Catalog | None, active: str = '') -> str:
  nav = []
  if catalog is not None:
    if catalog.workdir:
      nav.append(('run', '/run', 'Run'))
    nav.append(('episodes', '/episodes', 'Episodes'))
  links = ' '.join(f'<a href="{href}" class="{"active" if key == active else ""}">{esc(text)}</a>'
                   for key, href, text in nav)
  where = esc(catalog.path) if catalog is not None else ''
  return f'''<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · habc viewer</title>
<link rel="stylesheet" href="/static/viewer.css">
</head><body>
<header class="top"><a class="brand" href="/">habc viewer</a><nav>{links}</nav>
<span class="where" title="what this viewer serves">{where}</span></header>
<main>
{body}
</main>
<script src="/static/viewer.js"></script>
</body></html>'''


def error_page(catalog, message: str, status: int = 400, title: str = 'Cannot show this') -> HTMLResponse:
  body = (f'<section class="error" id="error"><h1>{esc(title)}</h1><p class="message">'
          f'{esc(message)}</p><p><a href="/">Back to the start page</a></p></section>')
  return HTMLResponse(layout(title, body, catalog), status_code=status)


def mini_timeline(row: Mapping, width: int = 160, height: int = 12) -> str:
  """An inline SVG bar of an episode: policy (blue) with the operator's segments (orange)."""
  steps = max(int(row.get('steps', 0)), 1)
  rects = [f'<rect x="0" y="0" width="{width}" height="{height}" class="mini-policy"/>']
  for a, b in row.get('human_segments', []):
    x = width * a / steps
    w = max(width * (b - a) / steps, 1.0)
    rects.append(f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" class="mini-human" '
                 f'data-start="{a}" data-stop="{b}"/>')
  return (f'<svg class="mini" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
          f'role="img" aria-label="controller timeline">{"".join(rects)}</svg>')


# ------------------------------------------------------------------------------------------------
# The app.


def create_app(catalog: vd.Catalog, critic: viewer_critic.CriticService | None = None,
               log: Callable[[str], None] | None = None) -> FastAPI:
  """The viewer's FastAPI app over an opened catalog."""
  critic = critic or viewer_critic.CriticService()
  log = log or (lambda text: print(text, file=sys.stderr, flush=True))
  app = FastAPI(title='habc viewer', docs_url=None, redoc_url=None, openapi_url=None)
  app.state.catalog = catalog
  app.state.critic = critic

  def is_api(request: Request) -> bool:
    return request.url.path.startswith('/api/')

  def failure(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ViewerError):
      status, message = 400, str(exc)
    else:
      status = 500
      message = (f'Internal error: {type(exc).__name__}: {exc} (the traceback is in the '
                 'terminal that runs the viewer).')
      log(f'habc viewer: error on {request.url.path}?{request.url.query}\n'
          + ''.join(traceback.format_exception(exc)))
    if is_api(request):
      return JSONResponse({'error': message}, status_code=status)
    return error_page(catalog, message, status)

  @app.exception_handler(ViewerError)
  async def _viewer_error(request: Request, exc: ViewerError):
    return failure(request, exc)

  @app.exception_handler(StarletteHTTPException)
  async def _http_error(request: Request, exc: StarletteHTTPException):
    message = ('There is no such page here.' if exc.status_code == 404 else str(exc.detail))
    if is_api(request):
      return JSONResponse({'error': message}, status_code=exc.status_code)
    return error_page(catalog, message, exc.status_code, 'Not found' if exc.status_code == 404
                      else 'Cannot show this')

  @app.exception_handler(Exception)
  async def _any_error(request: Request, exc: Exception):
    return failure(request, exc)

  def guarded(fn):
    """Sync handlers run in the thread pool; their errors become pages/JSON here, so that a
    middleware never sees them (Starlette re-raises from the 500 handler)."""
    import functools

    @functools.wraps(fn)
    def wrapper(request: Request):
      try:
        return fn(request)
      except Exception as e:  # pylint: disable=broad-except
        return failure(request, e)
    return wrapper

  # -- static and run files ---------------------------------------------------------------------
  @app.get('/favicon.ico')
  def favicon():
    return Response(status_code=204)

  @app.get('/static/{name}')
  def static(name: str):
    if name not in STATIC_FILES:
      return PlainTextResponse('no such file', status_code=404)
    return FileResponse(os.path.join(STATIC_DIR, name), media_type=STATIC_FILES[name],
                        headers={'Cache-Control': 'no-cache'})

  @app.get('/run-file/{path:path}')
  @guarded
  def run_file(request: Request):
    rel = request.path_params['path']
    if not catalog.workdir:
      raise ViewerError('There is no run here, so no run files.')
    root = os.path.realpath(catalog.workdir)
    full = os.path.realpath(os.path.join(root, rel))
    allowed = full == os.path.join(root, 'report.md') or full.startswith(
        os.path.join(root, 'plots') + os.sep)
    if not allowed or not os.path.isfile(full):
      raise ViewerError(f'{rel} is not a file of the run\'s report (report.md, plots/*.png).')
    media = 'text/plain; charset=utf-8' if full.endswith('.md') else None
    return FileResponse(full, media_type=media)

  # -- pages ------------------------------------------------------------------------------------
  @app.get('/')
  def home():
    if catalog.workdir and catalog.kind == 'workdir':
      return RedirectResponse('/run', status_code=307)
    return RedirectResponse('/episodes', status_code=307)

  @app.get('/run', response_class=HTMLResponse)
  @guarded
  def run_page(request: Request):
    summary = vd.run_summary(catalog)
    checkpoints = [c for d in catalog.checkpoint_dirs() for c in viewer_critic.list_checkpoints(d)]
    return HTMLResponse(layout('Run', render_run(summary, checkpoints), catalog, 'run'))

  @app.get('/episodes', response_class=HTMLResponse)
  @guarded
  def episodes_page(request: Request):
    return HTMLResponse(layout('Episodes', render_episodes(catalog, request.query_params),
                               catalog, 'episodes'))

  @app.get('/episode', response_class=HTMLResponse)
  @guarded
  def episode_page(request: Request):
    q = request.query_params
    view = catalog.dataset(q.get('ds'))
    index = view.check_index(q.get('i', '0'))
    return HTMLResponse(layout(f'{view.name} #{index}', render_episode(catalog, view, index, q),
                               catalog, 'episodes'))

  # -- API --------------------------------------------------------------------------------------
  @app.get('/api/status')
  def status():
    return {'path': catalog.path, 'kind': catalog.kind, 'workdir': catalog.workdir,
            'tensorflow_loaded': any(m == 'tensorflow' or m.startswith('tensorflow.')
                                     for m in sys.modules),
            'jax_loaded': 'jax' in sys.modules,
            'datasets': {n: {'episodes': len(v), 'indexed': v.indexed, 'error': v.error,
                             'scan_seconds': v.scan_seconds}
                         for n, v in catalog.datasets.items()},
            'cache': {'episodes': len(catalog.cache), 'bytes': catalog.cache.nbytes,
                      'max_episodes': catalog.cache.max_episodes,
                      'max_bytes': catalog.cache.max_bytes},
            'critic_evaluations': critic.evaluations}

  @app.get('/api/episodes')
  @guarded
  def api_episodes(request: Request):
    return JSONResponse(episode_rows(catalog, request.query_params))

  @app.get('/api/episode')
  @guarded
  def api_episode(request: Request):
    q = request.query_params
    view = catalog.dataset(q.get('ds'))
    detail = vd.episode_detail(view, q.get('i', '0'), credit_params(catalog, q))
    detail['credit_source'] = ('the page\'s settings' if any(k in q for k in CREDIT_KEYS)
                               else catalog.credit_source)
    detail['kind_colours'] = KIND_COLOURS
    return JSONResponse(detail)

  @app.get('/api/frame')
  @guarded
  def api_frame(request: Request):
    q = request.query_params
    view = catalog.dataset(q.get('ds'))
    data, media = view.frame(q.get('i', '0'), q.get('camera', ''), q.get('t', '0'))
    return Response(data, media_type=media, headers={'Cache-Control': 'max-age=3600'})

  @app.get('/api/checkpoints')
  @guarded
  def api_checkpoints(request: Request):
    found = []
    for directory in catalog.checkpoint_dirs():
      for c in viewer_critic.list_checkpoints(directory):
        found.append({'step': c['step'], 'path': c['path'], 'meta': c['meta']})
    return JSONResponse({'checkpoints': found, 'directories': catalog.checkpoint_dirs()})

  @app.get('/api/critic')
  @guarded
  def api_critic(request: Request):
    q = request.query_params
    view = catalog.dataset(q.get('ds'))
    checkpoint = q.get('checkpoint', '')
    if not checkpoint:
      raise ViewerError('Pick a checkpoint (a step directory, or a checkpoints folder for its '
                        'newest).')
    return JSONResponse(critic.evaluate(view, q.get('i', '0'), checkpoint))

  return app


CREDIT_KEYS = ('horizon', 'next_offset', 'min_human_steps', 'naive')


def credit_params(catalog: vd.Catalog, q: Mapping[str, str]) -> dict:
  """The catalog's credit settings, overridden by the request's (the episode page's form)."""
  credit = dict(catalog.credit)
  for key in ('horizon', 'next_offset', 'min_human_steps'):
    if q.get(key):
      credit[key] = q[key]
  if 'naive' in q:
    credit['naive'] = q['naive'].lower() in ('1', 'true', 'yes', 'on')
  return vd.check_credit(credit)


# ------------------------------------------------------------------------------------------------
# Episode list.


def _int_param(q: Mapping[str, str], key: str, default=None, low=None, high=None):
  value = q.get(key, '')
  if value in ('', None):
    return default
  try:
    v = int(value)
  except ValueError as e:
    raise ViewerError(f'{key} must be a whole number, got {value!r}.') from e
  if low is not None and v < low:
    raise ViewerError(f'{key} must be at least {low}, got {v}.')
  if high is not None and v > high:
    raise ViewerError(f'{key} must be at most {high}, got {v}.')
  return v


def episode_rows(catalog: vd.Catalog, q: Mapping[str, str]) -> dict:
  """One page of the episode list: rows, totals and what the filters saw."""
  ds = q.get('ds', '') or ('all' if len(catalog.datasets) > 1 else '')
  views = (list(catalog.datasets.values()) if ds in ('all', '')
           else [catalog.dataset(ds)])
  filters = dict(outcome=q.get('outcome', 'any') or 'any',
                 intervention=q.get('intervention', 'any') or 'any',
                 min_length=_int_param(q, 'min_length', low=0),
                 max_length=_int_param(q, 'max_length', low=0),
                 source=q.get('source', ''), sort=q.get('sort', 'index') or 'index')
  per = _int_param(q, 'per', 50, 1, 1000)
  page = _int_param(q, 'page', 1, 1)
  filtered = any(filters[k] not in (None, '', 'any') for k in
                 ('outcome', 'intervention', 'min_length', 'max_length', 'source')) or (
                     filters['sort'] != 'index')
  readable = [v for v in views if v.source is not None]
  total_episodes = sum(len(v) for v in readable)
  indexed = sum(v.indexed for v in readable)
  start = (page - 1) * per
  if not filtered:
    # The plain list needs no scan: each page summarises its own episodes.
    rows, position = [], 0
    for view in readable:
      lo, hi = max(start - position, 0), min(start + per - position, len(view))
      for i in range(lo, hi):
        rows.append(dict(view.summary(i), dataset=view.name))
      position += len(view)
    matching = total_episodes
  else:
    deadline = time.monotonic() + FILTER_WAIT_S
    for view in readable:
      view.start_scan()
      view.index_until(deadline)
    all_rows = [dict(r, dataset=v.name) for v in readable for r in v.summaries()]
    matched = vd.filter_rows(all_rows, **filters)
    matching = len(matched)
    rows = matched[start:start + per]
  indexed = sum(v.indexed for v in readable)
  return {'dataset': ds or (readable[0].name if readable else ''), 'rows': rows,
          'matching': matching, 'total': total_episodes, 'indexed': indexed,
          'complete': indexed >= total_episodes or not filtered, 'page': page, 'per': per,
          'filters': filters, 'filtered': filtered,
          'errors': {v.name: v.error for v in views if v.error}}


def render_episodes(catalog: vd.Catalog, q: Mapping[str, str]) -> str:
  data = episode_rows(catalog, q)
  f = data['filters']
  ds = data['dataset']
  options = ''
  if len(catalog.datasets) > 1:
    options += f'<option value="all"{" selected" if ds == "all" else ""}>all datasets</option>'
  for name, view in catalog.datasets.items():
    label = f'{name} ({len(view)} episodes)' if view.error is None else f'{name} (unreadable)'
    options += f'<option value="{esc(name)}"{" selected" if ds == name else ""}>{esc(label)}</option>'

  def select(name, values, current):
    return (f'<select name="{name}" id="f-{name}">' + ''.join(
        f'<option value="{esc(v)}"{" selected" if v == current else ""}>{esc(v)}</option>'
        for v in values) + '</select>')

  sources = sorted({r['source'] for v in catalog.datasets.values() for r in v.summaries()
                    if r.get('source')} | ({f['source']} if f['source'] else set()))
  form = f'''<form class="filters" id="filters" method="get" action="/episodes">
<label>dataset / round <select name="ds" id="f-ds">{options}</select></label>
<label>outcome {select('outcome', vd.OUTCOMES, f['outcome'])}</label>
<label>intervention {select('intervention', vd.INTERVENTIONS, f['intervention'])}</label>
<label>length from <input type="number" min="0" name="min_length" id="f-min_length" value="{esc(f['min_length'])}"></label>
<label>to <input type="number" min="0" name="max_length" id="f-max_length" value="{esc(f['max_length'])}"></label>
<label>kind {select('source', [''] + sources, f['source'])}</label>
<label>sort {select('sort', vd.SORTS, f['sort'])}</label>
<label>per page {select('per', [str(p) for p in PAGE_SIZES], str(data['per']))}</label>
<button type="submit">Apply</button> <a href="/episodes?{qs(ds=ds)}">clear</a>
</form>'''
  notes = []
  for name, error in data['errors'].items():
    notes.append(f'<p class="error-note">Dataset {esc(name)} cannot be read: {esc(error)}</p>')
  if not data['complete']:
    notes.append(f'<p class="notice" id="index-progress" data-indexed="{data["indexed"]}" '
                 f'data-total="{data["total"]}">Indexing: {data["indexed"]} of {data["total"]} '
                 'episodes read so far; the filters cover those. '
                 '<a href="javascript:location.reload()">Refresh</a></p>')
  rows = []
  for r in data['rows']:
    link = f'/episode?{qs(ds=r["dataset"], i=r["index"])}'
    outcome = 'success' if r['success'] else 'failure'
    err = f' <span class="error-note">{esc(r["error"])}</span>' if r.get('error') else ''
    version = r['policy_version'] if r['policy_version'] >= 0 else '–'
    rows.append(
        f'<tr class="episode-row" data-dataset="{esc(r["dataset"])}" data-index="{r["index"]}" '
        f'data-success="{int(r["success"])}" data-length="{r["length"]}" '
        f'data-operator-steps="{r["operator_steps"]}">'
        f'<td>{esc(r["dataset"])}</td><td><a href="{link}">{r["index"]}</a></td>'
        f'<td><a href="{link}">{esc(r["episode_id"])}</a>{err}</td>'
        f'<td><span class="badge {outcome}">{outcome}</span></td><td>{esc(r["source"])}</td>'
        f'<td class="num">{r["length"]}</td><td class="num">{r["operator_steps"]}</td>'
        f'<td>{mini_timeline(r)}</td><td class="num">{esc(version)}</td>'
        f'<td>{esc(r["task"])}</td></tr>')
  first = (data['page'] - 1) * data['per']
  shown = f'{first + 1}–{first + len(data["rows"])}' if data['rows'] else 'none'
  params = dict(q)
  pager = []
  if data['page'] > 1:
    pager.append(f'<a id="prev-page" href="/episodes?{qs(**dict(params, page=data["page"] - 1))}">'
                 '&larr; previous</a>')
  if first + len(data['rows']) < data['matching']:
    pager.append(f'<a id="next-page" href="/episodes?{qs(**dict(params, page=data["page"] + 1))}">'
                 'next &rarr;</a>')
  table = ('<table class="episodes" id="episodes"><thead><tr><th>dataset</th><th>#</th>'
           '<th>episode</th><th>outcome</th><th>kind</th><th>length</th><th>operator steps</th>'
           '<th>controller (policy / human)</th><th>policy version</th><th>task</th></tr></thead>'
           f'<tbody>{"".join(rows)}</tbody></table>') if rows else (
               '<p class="empty" id="no-episodes">No episode matches these filters.</p>')
  return (f'<h1>Episodes</h1>{form}{"".join(notes)}'
          f'<p class="count" id="episode-count" data-matching="{data["matching"]}">Showing {shown} '
          f'of {data["matching"]} matching episodes ({data["total"]} in all).</p>'
          f'{table}<p class="pager">{" ".join(pager)}</p>')


# ------------------------------------------------------------------------------------------------
# Episode page (the shell; viewer.js draws the rest).


def render_episode(catalog: vd.Catalog, view: vd.DatasetView, index: int,
                   q: Mapping[str, str]) -> str:
  row = view.summary(index)
  credit = credit_params(catalog, q)
  params = {k: q[k] for k in CREDIT_KEYS if k in q}
  nav = [f'<a href="/episodes?{qs(ds=view.name)}">&uarr; {esc(view.name)}</a>']
  if index > 0:
    nav.append(f'<a id="prev-episode" href="/episode?{qs(ds=view.name, i=index - 1, **params)}">'
               '&larr; previous</a>')
  if index + 1 < len(view):
    nav.append(f'<a id="next-episode" href="/episode?{qs(ds=view.name, i=index + 1, **params)}">'
               'next &rarr;</a>')
  outcome = 'success' if row['success'] else 'failure'
  credit_form = ''.join(
      f'<label>{k} <input type="number" min="1" name="{k}" value="{credit[k]}"></label>'
      for k in ('horizon', 'next_offset', 'min_human_steps'))
  checked = ' checked' if credit['naive'] else ''
  kinds_legend = ''.join(f'<span class="legend-item"><i style="background:{KIND_COLOURS[k.name]}">'
                         f'</i>{k.name}</span>' for k in SampleKind)
  return f'''<div class="episode-head">
<h1>{esc(view.name)} · episode {index} <small>{esc(row["episode_id"])}</small>
<span class="badge {outcome}" id="outcome">{outcome}</span></h1>
<p class="episode-nav">{" · ".join(nav)}</p>
<p class="facts" id="facts">{esc(row["source"])} · {row["length"]} control steps ·
{row["operator_steps"]} operator steps · policy version {row["policy_version"] if row["policy_version"] >= 0 else "–"} ·
task {esc(row["task"])}{(" · operator " + esc(row["operator"])) if row["operator"] else ""}</p>
<p class="instruction" id="instruction"></p>
</div>
<div id="episode-app" data-ds="{esc(view.name)}" data-index="{index}" data-query="{esc(qs(**params))}">
<section class="frames-panel">
  <div class="frames-row"><div class="frames-col"><div id="frames" class="frames"></div>
  <div class="controls">
    <button type="button" id="play" title="play / pause (space)">&#9654; play</button>
    <button type="button" id="step-back" title="previous step (&larr;)">&lsaquo;</button>
    <input type="range" id="scrub" min="0" max="0" value="0" step="1" aria-label="step">
    <button type="button" id="step-fwd" title="next step (&rarr;)">&rsaquo;</button>
    <label>fps <select id="fps"><option>5</option><option selected>10</option><option>20</option><option>30</option><option>60</option></select></label>
  </div>
  <div id="step-label" class="step-label">step 0</div></div>
  <div id="readout" class="readout"></div></div>
</section>
<section>
  <h2>Timeline</h2>
  <div class="legend"><span class="legend-item"><i class="policy"></i>policy</span>
  <span class="legend-item"><i class="human"></i>human (operator)</span> · window kinds: {kinds_legend}</div>
  <div id="timeline-box"><svg id="timeline" width="100%" height="96"></svg></div>
  <details class="credit"><summary>Credit settings: horizon {credit["horizon"]}, next_offset
  {credit["next_offset"]}, min_human_steps {credit["min_human_steps"]}, naive {str(credit["naive"]).lower()}
  <span id="credit-source"></span></summary>
  <form method="get" action="/episode"><input type="hidden" name="ds" value="{esc(view.name)}">
  <input type="hidden" name="i" value="{index}">{credit_form}
  <label><input type="checkbox" name="naive" value="1"{checked}> naive</label>
  <button type="submit">Recompute kinds</button></form></details>
</section>
<section class="critic-panel">
  <h2>Critic and weights</h2>
  <div class="critic-controls">
    <label>checkpoint <select id="checkpoint"></select></label>
    <label>or path <input type="text" id="checkpoint-path" size="48" placeholder="WORKDIR/checkpoints/STEP"></label>
    <button type="button" id="evaluate">Evaluate</button>
    <span id="critic-status" class="status"></span>
  </div>
  <div id="critic-plots" class="plots"></div>
</section>
<section>
  <h2>Actions: executed (solid) and the policy's proposal (dashed)</h2>
  <div id="action-plots" class="plots"></div>
</section>
<section>
  <details open><summary><h2 class="inline">State</h2></summary>
  <div id="state-plots" class="plots"></div></details>
</section>
</div>'''


# ------------------------------------------------------------------------------------------------
# Run page.


def render_run(s: dict, checkpoints: list[dict]) -> str:
  import json
  title = f'{esc(s["method"])} on {esc(s["task"])}'
  done = s['progress'].get('report') and all(
      s['progress'].get(f'round_{r:03d}') for r in range(1, s['planned_rounds'] + 1))
  state = 'finished' if done else 'in progress (or stopped)'
  head = (f'<h1>{title} <small>seed {esc(s["seed"])} · preset {esc(s["preset"])} · '
          f'obs {esc(s["obs"])}</small></h1><p class="facts">{esc(s["workdir"])} · '
          f'{s["planned_rounds"]} online rounds planned · {state}'
          + (' · <a href="/run-file/report.md">report.md</a>' if s['report'] else '') + '</p>')
  rows = []
  for r in s['rounds']:
    ev, col, tr = r.get('eval') or {}, r.get('collect') or {}, r.get('train') or {}
    ds = r['dataset'] if r['round'] else ('demos' if 'demos' in s['datasets'] else None)
    link = (f'<a href="/episodes?{qs(ds=ds)}">{esc(ds)}</a>' if ds else '–')
    success = (f'{pct(ev["success_rate"])} ({ev["successes"]}/{ev["episodes"]})' if ev else '–')
    ci = f'[{pct(ev["ci_low"])}, {pct(ev["ci_high"])}]' if ev else '–'
    length = (f'{fmt(ev.get("mean_success_length"), 1)} ± {fmt(ev.get("std_success_length"), 1)}'
              if ev.get('mean_success_length') is not None else '–')
    gate_keys = [k for k in tr if k.startswith('gate/') and k.endswith('_mean')]
    gate = sum(tr[k] for k in gate_keys) / len(gate_keys) if gate_keys else None
    rows.append(
        f'<tr class="round-row" data-round="{r["round"]}"><td>{r["round"]}'
        f'{" (SFT)" if r["round"] == 0 else ""}</td><td class="num">{success}</td>'
        f'<td class="num">{ci}</td><td class="num">{length}</td>'
        f'<td class="num">{col.get("episodes", "–")}</td><td class="num">{col.get("successes", "–")}</td>'
        f'<td class="num">{col.get("episodes_with_intervention", "–")}</td>'
        f'<td class="num">{col.get("intervention_steps", "–")}</td>'
        f'<td class="num">{fmt(tr.get("actor/loss"), 4)}</td>'
        f'<td class="num">{fmt(tr.get("critic/loss"), 4)}</td>'
        f'<td class="num">{fmt(gate)}</td><td class="num">{fmt(tr.get("gate/success_mean"))}</td>'
        f'<td>{link}</td></tr>')
  table = ('<table class="rounds" id="rounds"><thead><tr><th>round</th><th>success (eval)</th>'
           '<th>Wilson 95%</th><th>length of successes</th><th>collected</th><th>collected '
           'successes</th><th>with intervention</th><th>operator steps</th><th>actor loss</th>'
           '<th>critic loss</th><th>mean gate (kinds)</th><th>gate on successes</th>'
           f'<th>episodes</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')

  # Critic diagnostics: held-out ones (logs/critic_round_XXX.json) when the run wrote them, and
  # the learner's means over each round's training batches.
  def metric_table(section: str, prefixes: tuple[str, ...], table_id: str) -> str:
    keys = sorted({k for r in s['rounds'] for k in (r.get(section) or {})
                   if not prefixes or k.startswith(prefixes)})
    if not keys:
      return ''
    rounds = [r for r in s['rounds'] if r.get(section)]
    head = ''.join(f'<th>round {r["round"]}</th>' for r in rounds)
    body = ''.join(f'<tr><td>{esc(k)}</td>' + ''.join(
        f'<td class="num">{fmt((r.get(section) or {}).get(k), 4)}</td>' for r in rounds) + '</tr>'
                   for k in keys)
    return (f'<table class="metrics" id="{table_id}"><thead><tr><th>metric</th>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table>')

  held_out = metric_table('critic', (), 'critic-diagnostics')
  training = metric_table('train', ('critic/', 'advantage/', 'gate/', 'weights/', 'count/'),
                          'train-diagnostics')
  critic = '<h2>Critic diagnostics</h2>'
  critic += (f'<p>On held-out episodes (logs/critic_round_XXX.json):</p>{held_out}' if held_out
             else '<p class="notice">No held-out critic diagnostics in logs/ '
                  '(logs/critic_round_XXX.json) yet; the learner\'s figures on its training batches '
                  'follow.</p>')
  if training:
    critic += ('<details><summary>Learner means over each round\'s training batches (critic, '
               f'advantages, gates, weights)</summary>{training}</details>')
  gates = [{'round': r['round'], **r['gates']} for r in s['rounds'] if r.get('gates')]
  gate_html = ''
  if gates:
    items = []
    for g in gates:
      cells = ''.join(f'<tr><td><i class="swatch" style="background:{KIND_COLOURS[k]}"></i>{k}'
                      f'</td><td class="num">{v["count"]}</td><td class="num">{fmt(v["mean"])}</td>'
                      f'<td class="num">{pct(v["saturated"])}</td></tr>'
                      for k, v in g['kinds'].items())
      items.append(f'<div class="gate-round"><h3>after round {g["round"]}</h3>'
                   f'<div class="gate-hist" data-round="{g["round"]}"></div><table class="metrics">'
                   '<thead><tr><th>kind</th><th>windows</th><th>mean g</th><th>saturated</th></tr>'
                   f'</thead><tbody>{cells}</tbody></table></div>')
    gate_html = ('<h2>Gate g<sub>t</sub> per sample kind</h2><p>Sampled at the end of each round\'s '
                 'training (logs/gates_round_XXX.npz), before normalisation; saturated: within '
                 f'{vd.SATURATION_MARGIN} of 0 or 2.</p><div class="gates">{"".join(items)}</div>')
  datasets = ''.join(
      f'<tr><td><a href="/episodes?{qs(ds=n)}">{esc(n)}</a></td><td class="num">{d["episodes"]}</td>'
      f'<td>{esc(d["error"] or "")}</td></tr>' for n, d in s['datasets'].items())
  ckpts = ''.join(
      f'<tr><td class="num">{c["step"]}</td><td>{esc(c["meta"].get("stage", ""))}</td>'
      f'<td class="num">{esc(c["meta"].get("round", ""))}</td><td>{esc(c["path"])}</td></tr>'
      for c in checkpoints)
  plots = ''.join(f'<figure><img src="/run-file/plots/{esc(p)}" alt="{esc(p)}">'
                  f'<figcaption>{esc(p)}</figcaption></figure>' for p in s['plots'])
  data = {'rounds': [{'round': r['round'], 'eval': r.get('eval')} for r in s['rounds']],
          'gates': gates, 'kind_colours': KIND_COLOURS}
  return (f'{head}<section><h2>Per round</h2>{table}<div class="plots run-plots" id="run-plots">'
          f'</div></section><section>{critic}</section><section>{gate_html}</section>'
          f'<section><h2>Datasets</h2><table class="metrics" id="datasets"><thead><tr><th>dataset'
          f'</th><th>episodes</th><th></th></tr></thead><tbody>{datasets}</tbody></table></section>'
          '<section><h2>Checkpoints</h2>' + (
              f'<table class="metrics" id="checkpoints"><thead><tr><th>step</th><th>stage</th>'
              f'<th>round</th><th>path</th></tr></thead><tbody>{ckpts}</tbody></table>'
              if ckpts else '<p>None kept.</p>') + '</section>' + (
                  f'<section><h2>Report plots</h2><div class="report-plots">{plots}</div></section>'
                  if plots else '') +
          f'<script type="application/json" id="run-data">{_json_for_script(data)}</script>')


def _json_for_script(data: Any) -> str:
  import json
  return json.dumps(data).replace('</', '<\\/')
