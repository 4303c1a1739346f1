"""The training loop of issue 25: K updates per call equal K single updates; the loop's logged
metrics and running means equal those of the old loop (every metric fetched every step); the
loop respects log and checkpoint boundaries and per-step flags; a profile trace is written."""

import dataclasses
import glob
import gzip
import os

import jax
import numpy as np
import pytest

from habc.run import pipeline
from habc.learning import learner as learner_lib
from habc.learning import loop
from habc.learning import profile as profile_lib
from habc.learning.synthetic import synthetic_batch
from habc.networks import build_model
from tests.test_crash_resume import FakeBackend, smoke_config
from tests.test_learner import small_config

ATOL = 1e-5


def batches_for(n, seed=0, batch_size=16):
  """n distinct host batches with every sample kind (state observations, horizon 4)."""
  out = []
  for i in range(n):
    b = synthetic_batch(batch_size, horizon=4, vision=False, seed=seed + i)
    # A sample kind absent from some batches makes its gate statistics NaN there: the running
    # means must skip those, as before.
    if i % 3 == 1:
      b['valid'] = b['valid'] & (b['kind'] != 0)
    out.append(b)
  return out


def make_learner(weighting='habc', seed=0):
  c = small_config(weighting)
  c.method.warmup_steps = 2
  return learner_lib.Learner(c, build_model(c, 10), synthetic_batch(16, horizon=4, vision=False),
                             seed=seed)


def assert_trees_close(a, b, atol=ATOL):
  a, b = jax.device_get(a), jax.device_get(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


# ---- several updates per call -----------------------------------------------------------------


def test_multi_step_equals_single_steps_with_per_step_flags():
  batches = batches_for(6)
  warmup = [True, True, False, False, False, False]
  critic_only = [True, False, False, True, False, False]
  single, multi = make_learner(), make_learner()
  singles = [single.update(b, intervention_reweighting=True, gate_warmup=w, critic_only=c)
             for b, w, c in zip(batches, warmup, critic_only)]
  # Two calls of three: the scan carries the state across calls like single steps do.
  stacked = [multi.dispatch_many(batches[i:i + 3], intervention_reweighting=True,
                                 gate_warmup=warmup[i:i + 3], critic_only=critic_only[i:i + 3])
             for i in (0, 3)]
  assert multi.step == single.step == 6
  assert int(multi.state.step) == int(single.state.step) == 6
  assert_trees_close(multi.state.params, single.state.params)
  assert_trees_close(multi.state.opt_state, single.state.opt_state)
  np.testing.assert_array_equal(jax.device_get(multi.state.rng), jax.device_get(single.state.rng))
  # Row i of the stacked metrics is the i-th update's.
  rows = [{k: float(np.asarray(v)[i]) for k, v in jax.device_get(m).items()}
          for m in stacked for i in range(3)]
  for got, want in zip(rows, singles):
    assert set(got) == set(want)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=ATOL, err_msg=k)
  # The flags took effect per step: the critic-only updates left the actor alone.
  assert [r['learner/critic_only'] for r in rows] == [float(c) for c in critic_only]


def test_a_multi_step_without_critic_only_moves_the_actor_like_single_steps():
  """Flags left to their defaults (None) in a multi-step call, as the SFT stage does."""
  batches = batches_for(4, seed=10)
  single, multi = make_learner('bc'), make_learner('bc')
  for b in batches:
    single.update(b)
  multi.dispatch_many(batches)
  assert_trees_close(multi.state.params, single.state.params)
  before = jax.device_get(make_learner('bc').state.params['params']['action_expert'])
  after = jax.device_get(multi.state.params['params']['action_expert'])
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before),
                                                      jax.tree.leaves(after)))


def test_dispatch_many_names_a_flag_list_of_the_wrong_length():
  lrn = make_learner('bc')
  with pytest.raises(ValueError, match='gate_warmup has 1 flags for 2 batches'):
    lrn.dispatch_many(batches_for(2), gate_warmup=[True])


# ---- the loop's metrics are the old loop's ------------------------------------------------------


class LearnerBackend:
  """What run_updates needs of habc.run.backend.Backend, on a bare Learner."""

  def __init__(self, learner):
    self.learner = learner

  @property
  def step(self):
    return self.learner.step

  def update(self, batch, **flags):
    return self.learner.dispatch(batch, **flags)

  def update_many(self, batches, **flags):
    return self.learner.dispatch_many(batches, **flags)


def flags_at(step):
  """Per-step flags like a round's: a critic phase of 3 updates, warm-up of 5."""
  return {'intervention_reweighting': False, 'gate_warmup': step < 5, 'critic_only': step < 3}


def old_loop(learner, batches, target, log_every):
  """The pipeline's loop before issue 25: every metric fetched to the host after every update."""
  sums, counts, logged = {}, {}, []
  step = learner.step
  while step < target:
    metrics = learner.update(next(batches), **flags_at(step))
    step = learner.step
    for k, v in metrics.items():
      if np.isfinite(v):
        sums[k] = sums.get(k, 0.0) + v
        counts[k] = counts.get(k, 0) + 1
    if step % log_every == 0 or step == target:
      logged.append((step, metrics))
  return logged, {k: v / counts[k] for k, v in sums.items()}


@pytest.mark.parametrize('steps_per_dispatch', [1, 3])
def test_logged_metrics_and_means_equal_the_old_loops(steps_per_dispatch):
  target, log_every, checkpoint_every = 14, 4, 6
  data = batches_for(target, seed=3)
  want_logged, want_means = old_loop(make_learner(), iter(data), target, log_every)

  logged, saved, stepped = [], [], []
  plan = loop.StepPlan(target=target, log_every=log_every, checkpoint_every=checkpoint_every,
                       flags=flags_at, steps_per_dispatch=steps_per_dispatch)
  hooks = loop.LoopHooks(on_log=lambda s, m: logged.append((s, m)), on_checkpoint=saved.append,
                         on_step=stepped.append)
  learner = make_learner()
  means = loop.run_updates(LearnerBackend(learner), iter(data), plan, hooks)

  assert stepped == list(range(1, target + 1))
  assert saved == [6, 12, 14]
  assert [s for s, _ in logged] == [s for s, _ in want_logged] == [4, 8, 12, 14]
  for (_, got), (_, want) in zip(logged, want_logged):
    assert set(got) == set(want)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=ATOL, err_msg=k)
  assert set(means) == set(want_means)
  assert any(k.startswith('gate/') for k in means)  # NaN in some batches: counted apart.
  for k in want_means:
    np.testing.assert_allclose(means[k], want_means[k], rtol=1e-4, atol=ATOL, err_msg=k)
  if steps_per_dispatch == 1:  # The same updates, summed in the same order in float64: equal.
    assert means == want_means
    for (_, got), (_, want) in zip(logged, want_logged):
      np.testing.assert_array_equal([got[k] for k in want], list(want.values()))  # NaN == NaN.


def test_metric_totals_skip_non_finite_values_per_name():
  totals = loop.MetricTotals()
  totals.add({'a': 1.0, 'b': float('nan')})
  totals.add({'a': np.float32(3.0), 'b': 2.0})
  totals.fold()
  totals.add({'a': np.array([5.0, np.inf], np.float32), 'b': np.array([4.0, 6.0], np.float32)})
  totals.add({'a': 7.0, 'b': float('nan'), 'c': float('nan')})  # A name first seen late.
  means = totals.means()
  assert means == {'a': 4.0, 'b': 4.0}  # a: (1+3+5+7)/4; b: (2+4+6)/3; c never finite.


# ---- boundaries and resume ---------------------------------------------------------------------


def test_steps_in_next_call_stop_at_log_checkpoint_and_target():
  plan = loop.StepPlan(target=20, log_every=8, checkpoint_every=6, flags=flags_at,
                       steps_per_dispatch=4)
  calls, step = [], 0
  while step < plan.target:
    k = loop.steps_in_next_call(step, plan)
    calls.append(k)
    step += k
  # 0-4, then 4-6 in ones (checkpoint at 6), 6-8 in ones (log at 8), 8-12 (checkpoint), 12-16
  # (log), 16-18 in ones (checkpoint), 18-20 in ones (target).
  assert calls == [4, 1, 1, 1, 1, 4, 4, 1, 1, 1, 1]
  one = dataclasses.replace(plan, steps_per_dispatch=1)
  assert {loop.steps_in_next_call(s, one) for s in range(20)} == {1}


class MultiStepFakeBackend(FakeBackend):
  """test_crash_resume's stand-in with K updates per call: records each update's flags."""

  def __init__(self, config, step=0):
    super().__init__(config, step)
    self.calls = []

  def update_many(self, batches, intervention_reweighting, gate_warmup=None, critic_only=None):
    k = len(batches)
    self.calls.append((self._step, k))
    self.warmups.extend(gate_warmup if gate_warmup is not None else [None] * k)
    self.critic_only.extend(critic_only if critic_only is not None else [None] * k)
    self._step += k
    return {'loss': np.ones(k, np.float32)}


def test_multi_step_rounds_keep_per_step_flags_and_resume_at_a_checkpoint(tmp_path):
  config = smoke_config()
  config.critic.phase_steps = 3
  config.critic.holdout_fraction = 0.0
  config.method.warmup_steps = 5
  config.pipeline.steps_per_round = 12
  config.pipeline.checkpoint_every = 6
  config.pipeline.log_every = 4
  sft = config.pipeline.sft_steps
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  datasets = [(os.path.join(workdir, 'data', 'demos'), 1.0)]
  target = sft + config.pipeline.steps_per_round

  def run(steps_per_dispatch, start, on_event=None):
    config.runtime.steps_per_dispatch = steps_per_dispatch
    backend = MultiStepFakeBackend(config, step=start)
    p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None,
                          on_event=on_event)
    try:
      p._train_to(target, stage='round_001', round_index=1, datasets=datasets)  # pylint: disable=protected-access
    finally:
      p.close()
    return backend

  single = run(1, sft)
  multi = run(2, sft)
  assert multi.warmups == single.warmups == [i < 5 for i in range(12)]
  assert multi.critic_only == single.critic_only == [i < 3 for i in range(12)]
  # No call crosses a checkpoint (multiples of 6) or log boundary (multiples of 4).
  for start, k in multi.calls:
    assert all(s % 4 and s % 6 for s in range(start + 1, start + k)), (start, k)
  assert multi.calls

  # Stopped after the update of step sft + 7, resumed from the checkpoint of sft + 6 (what the
  # real backend would restore): the flags of the resumed steps are the uninterrupted run's.
  def stop(event, info):
    if event == 'train_step' and info['step'] == sft + 7:
      raise pipeline.Stop()

  with pytest.raises(pipeline.Stop):
    run(2, sft, on_event=stop)
  resumed = run(2, sft + 6)
  assert resumed.critic_only == single.critic_only[6:]
  assert resumed.warmups == single.warmups[6:]
  means = pipeline._read_json(os.path.join(workdir, 'logs', 'train_round_001.json'))  # pylint: disable=protected-access
  assert means == {'loss': 1.0}


# ---- profiles ----------------------------------------------------------------------------------


def test_runtime_profile_writes_a_trace_tensorboard_can_open(tmp_path):
  config = smoke_config()
  config.runtime.profile = 'steps:2-4'
  workdir = str(tmp_path / 'run')
  pipeline.prepare_workdir(config, workdir)
  backend = FakeBackend(config, step=0)
  p = pipeline.Pipeline(config, workdir, backend=backend, log=lambda line: None)
  try:
    p._train_to(config.pipeline.sft_steps, stage='sft', round_index=0,  # pylint: disable=protected-access
                datasets=[(os.path.join(workdir, 'data', 'demos'), 1.0)])
  finally:
    p.close()
  # TensorBoard's profile plugin reads <logdir>/<run>/plugins/profile/<session>/*.xplane.pb.
  traces = glob.glob(os.path.join(workdir, 'logs', profile_lib.PROFILE_DIR, 'plugins', 'profile',
                                  '*', '*.xplane.pb'))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


def test_a_real_learner_trace_holds_its_update(tmp_path):
  """The trace of real updates names the jitted step (what a user looks for in TensorBoard)."""
  learner = make_learner('bc')
  plan = loop.StepPlan(target=3, log_every=10, checkpoint_every=10, flags=lambda s: {},
                       profile=(1, 2))
  loop.run_updates(LearnerBackend(learner), iter(batches_for(3)), plan,
                   loop.LoopHooks(profile_dir=str(tmp_path)))
  traces = glob.glob(str(tmp_path / 'plugins' / 'profile' / '*' / '*.trace.json.gz'))
  assert len(traces) == 1
  with gzip.open(traces[0], 'rt') as f:
    assert 'train_step' in f.read()


def test_a_trace_window_inside_a_call_of_k_updates_is_traced(tmp_path):
  trace = profile_lib.StepTrace((25, 28), str(tmp_path))
  trace.before(20, 10)  # The call of updates 20..29 holds the window.
  assert trace.active
  trace.after(30, None)
  assert not trace.active
  assert glob.glob(str(tmp_path / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  late = profile_lib.StepTrace((25, 28), str(tmp_path / 'late'))
  late.before(10, 10)
  late.before(28, 1)
  assert not late.active


@pytest.mark.parametrize('value, want', [('', None), ('steps:3-7', (3, 7))])
def test_parse_profile(value, want):
  assert profile_lib.parse_profile(value) == want


@pytest.mark.parametrize('value', ['steps:7-3', 'steps:3-3', '3-7', 'first'])
def test_parse_profile_says_what_to_write(value):
  with pytest.raises(ValueError, match=r"steps:START-END"):
    profile_lib.parse_profile(value)


# ---- the benchmark's FLOP/s and peak -------------------------------------------------------------


CPUINFO = """processor\t: 0
cpu MHz\t\t: 2600.000
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq
processor\t: 1
cpu MHz\t\t: 2400.000
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq
"""


def test_cpu_peak_is_cores_clock_fma_units_lanes_and_two():
  from habc.bench import learner as bench
  peak, how = bench.cpu_peak_flops(CPUINFO, cores=2, fma_units=2)
  assert peak == pytest.approx(2 * 2.6e9 * 2 * 16 * 2)
  assert '16 fp32 lanes' in how and '2 FMA units' in how
  avx2 = CPUINFO.replace(' avx512f avx512dq', '')
  assert bench.cpu_peak_flops(avx2, cores=2)[0] == pytest.approx(2 * 2.6e9 * 2 * 8 * 2)
  no_fma = avx2.replace(' fma', '')
  assert bench.cpu_peak_flops(no_fma, cores=1)[0] == pytest.approx(2.6e9 * 1 * 8 * 2)


def test_gpu_peak_comes_from_the_table_by_device_kind():
  from habc.bench import learner as bench

  class Device:
    platform = 'gpu'
    device_kind = 'NVIDIA H100 PCIe'

  assert bench.peak_flops(Device())[0] == 51e12  # Not the SXM part's 67.
  Device.device_kind = 'NVIDIA H200'
  assert bench.peak_flops(Device())[0] == 67e12
  Device.device_kind = 'Some New GPU'
  assert np.isnan(bench.peak_flops(Device())[0])


def test_xla_flops_of_a_matmul():
  from habc.bench import learner as bench
  f = jax.jit(lambda a, b: a @ b)
  x = np.ones((32, 64), np.float32)
  assert bench.xla_flops(f, x, x.T) == pytest.approx(2 * 32 * 64 * 32, rel=0.01)


def test_loop_table_gives_the_ratio_to_the_bare_update():
  from habc.bench import learner as bench
  rows = [{'obs': 'state', 'name': name, 'seconds': s, 'updates_per_s': 1 / s, 'flops': 2e9,
           'flops_per_s': 2e9 / s, 'peak_share': 2e9 / s / 333e9, 'wait_share': 0.01}
          for name, s in (('(a) bare jitted update', 0.025), ('(-) old loop', 0.04),
                          ('(b) pipeline loop, 1 update/call', 0.0275),
                          ('(c) pipeline loop, 5 updates/call', 0.024))]
  lines = []
  bench.print_loop_table(rows, 64, lines.append)
  assert lines[-2:] == [
      'obs=state: pipeline loop, 1 update/call / bare update = 0.91x (meets the 0.9x target), '
      'batch 64',
      'obs=state: pipeline loop, 5 updates/call / bare update = 1.04x (meets the 0.9x target), '
      'batch 64']
  cells = [c.strip() for c in lines[2].strip('|').split('|')]
  assert cells[6:8] == ['80.0', '24.0%']  # 2 GFLOP in 25 ms, of 333 GFLOP/s.
