"""The layering of habc/ (docs/architecture.md): imports point down or sideways, never up, and no
modules import each other (directly or around a loop). Checked by parsing every module with ast,
imports inside functions included."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'habc')

# Module-name prefix -> layer (docs/architecture.md); the longest matching prefix wins.
LAYERS = {
    'habc': 0,  # The package's __init__: the rendering backend, nothing of habc.
    'habc.labeling': 0,
    'habc.symbols': 0,
    'habc.losses': 0,
    'habc.data': 1,
    'habc.envs': 1,
    'habc.networks': 1,
    'habc.learning': 2,
    'habc.run': 3,
    'habc.config_checks': 3,
    'habc.fleet': 4,
    'habc.analysis': 5,
    'habc.bench': 5,
    'habc.web': 5,
    'habc.view': 6,
    'habc.results': 6,
    'habc.critic_diagnostics': 6,
    'habc.policy_fit': 6,
    'habc.stations': 6,
    'habc.storage': 6,
}
# Packages of one layer that stay independent of one another.
INDEPENDENT = ('habc.data', 'habc.envs', 'habc.networks')


def module_name(path: str) -> str:
  """habc/run/pipeline.py -> 'habc.run.pipeline'; habc/run/__init__.py -> 'habc.run'."""
  rel = os.path.relpath(path, ROOT)[:-len('.py')].split(os.sep)
  if rel[-1] == '__init__':
    rel = rel[:-1]
  return '.'.join(rel)


def all_modules() -> dict[str, str]:
  """Module name -> file, for every .py file under habc/."""
  out = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        out[module_name(path)] = path
  return out


def layer_of(module: str) -> int | None:
  """The layer of a module name (its longest prefix in LAYERS; 'habc' itself only names the
  package's __init__), or None when none matches."""
  best = None
  for prefix in LAYERS:
    if module == prefix or (prefix != 'habc' and module.startswith(prefix + '.')):
      if best is None or len(prefix) > len(best):
        best = prefix
  return None if best is None else LAYERS[best]


def resolve(target: str, modules: dict[str, str]) -> str:
  """The module an imported name lives in: 'habc.run.rollout.seed_for' -> 'habc.run.rollout'."""
  while target not in modules and '.' in target:
    target = target.rsplit('.', 1)[0]
  return target


def imports_of(module: str, path: str, modules: dict[str, str]) -> list[tuple[str, int]]:
  """(imported habc module, line) of every import in the file, relative ones resolved."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split('.')
        base = base[:len(base) - (node.level - 1)]
        start = '.'.join(base + ([node.module] if node.module else []))
      else:
        start = node.module or ''
      names = [f'{start}.{a.name}' for a in node.names]
    else:
      continue
    for name in names:
      if name == 'habc' or name.startswith('habc.'):
        out.append((resolve(name, modules), node.lineno))
  return out


def import_graph() -> dict[str, dict[str, int]]:
  """Module -> {imported habc module: first line}, self-imports left out."""
  modules = all_modules()
  graph = {}
  for module, path in modules.items():
    edges = {}
    for target, line in imports_of(module, path, modules):
      if target != module:
        edges.setdefault(target, line)
    graph[module] = edges
  return graph


def upward_imports(graph) -> list[str]:
  """'a (layer i) -> b (layer j > i), line n' for every import that points up a layer, or from or
  to a module with no layer, or between the independent packages of the parts layer."""
  bad = []
  for module, edges in sorted(graph.items()):
    mine = layer_of(module)
    if mine is None:
      bad.append(f'{module}: no layer (add it to docs/architecture.md and LAYERS)')
      continue
    for target, line in sorted(edges.items()):
      theirs = layer_of(target)
      if theirs is None or theirs > mine:
        bad.append(f'{module} (layer {mine}) -> {target} (layer {theirs}), line {line}')
      own = [p for p in INDEPENDENT if module == p or module.startswith(p + '.')]
      other = [p for p in INDEPENDENT if target == p or target.startswith(p + '.')]
      if own and other and own != other:
        bad.append(f'{module} -> {target}, line {line}: {own[0]} and {other[0]} stay independent')
  return bad


def cycles(graph) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, {}):
      if w not in graph:
        continue
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(out)


def test_no_import_points_up_a_layer():
  bad = upward_imports(import_graph())
  assert not bad, 'Imports against docs/architecture.md:\n' + '\n'.join(bad)


def test_no_import_cycles():
  found = cycles(import_graph())
  assert not found, 'Modules that import each other: ' + '; '.join(' <-> '.join(c) for c in found)


def test_the_checks_catch_an_upward_import_and_a_cycle():
  graph = {'habc.losses': {'habc.run.pipeline': 3}, 'habc.run.pipeline': {'habc.losses': 1},
           'habc.data.reader': {'habc.envs.base': 5}, 'habc.envs.base': {}}
  assert upward_imports(graph) == [
      'habc.data.reader -> habc.envs.base, line 5: habc.data and habc.envs stay independent',
      'habc.losses (layer 0) -> habc.run.pipeline (layer 3), line 3']
  assert cycles(graph) == [['habc.losses', 'habc.run.pipeline']]


def test_relative_and_lazy_imports_are_seen(tmp_path):
  modules = {'habc.run.a': '', 'habc.run.b': '', 'habc.run': ''}
  path = tmp_path / 'a.py'
  path.write_text('from . import b\n\ndef f():\n  from habc.run.b import g\n  import habc.run\n')
  assert imports_of('habc.run.a', str(path), modules) == [
      ('habc.run.b', 1), ('habc.run.b', 4), ('habc.run', 5)]


def test_the_rendering_backend_is_chosen_in_one_place():
  setters = []
  for module, path in sorted(all_modules().items()):
    with open(path) as f:
      if re.search(r"environ(\.setdefault\(|\[)\s*'(MUJOCO_GL|PYOPENGL_PLATFORM)'", f.read()):
        setters.append(module)
  assert setters == ['habc'], (f'MUJOCO_GL / PYOPENGL_PLATFORM set in {setters}; set them in '
                               'habc/__init__.py only')


@pytest.mark.parametrize('module', ['habc.results', 'habc.critic_diagnostics', 'habc.policy_fit',
                                    'habc.stations', 'habc.storage'])
def test_command_modules_only_hand_over(module):
  """The entry modules that keep a documented `python -m habc.X` of a moved module do no work of
  their own: they call the moved module's main."""
  path = all_modules().get(module)
  assert path is not None, f'{module} is gone: the documented `python -m {module}` needs it'
  with open(path) as f:
    tree = ast.parse(f.read())
  defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
  assert not defined, f'{module} defines {defined}: keep the work in a lower layer'
