"""Shared pytest set-up: markers, and keeping TensorFlow out of the test process."""

import os

# Tests run on the CPU; MuJoCo renders in software without a display.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('MUJOCO_GL', 'osmesa')
os.environ.setdefault('PYOPENGL_PLATFORM', 'osmesa')


def pytest_addoption(parser):
  parser.addoption('--runslow', action='store_true', default=False,
                   help='also run tests marked slow (long end-to-end runs)')


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: long end-to-end test, run with --runslow')


def pytest_collection_modifyitems(config, items):
  if config.getoption('--runslow'):
    return
  import pytest
  skip = pytest.mark.skip(reason='slow: run with --runslow')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)
