"""Pipeline sections of every experiment config, and the size presets (smoke / default / paper).

``experiments.base`` holds the method's sections (``model``, ``credit``, ``method``, ``learner``);
this module adds what the pipeline needs around them:

``data``      demonstrations and the mix of datasets in a training batch.
``rollout``   online collection: episodes per round, how much of each action chunk is executed.
``operator``  the simulated operator (passed to ``habc.envs.operator.SimulatedOperator``).
``eval``      evaluation trials and the frames kept for the report.
``pipeline``  rounds, learner steps per stage, checkpoint and log cadence.
``runtime``   how the run is executed (workers, progress bars). Not part of a run's identity: a
              workdir made with other ``runtime`` values still resumes.

A method file calls ``make_config(preset)``, then sets its method fields. The preset is chosen with
``launch.py --preset=...`` (passed to ``get_config`` as the ml_collections config string).
"""

import ml_collections

from experiments import base

PRESETS = ('smoke', 'default', 'study', 'paper')
# Config sections that describe how a run executes, not what it computes.
RUNTIME_SECTIONS = ('runtime',)


def add_pipeline_sections(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the pipeline sections (default-preset values) to a base config, in place."""
  c.preset = 'default'

  c.data = ml_collections.ConfigDict()
  c.data.num_demos = 40  # Scripted-expert demonstrations recorded as ALOHA-style HDF5.
  # A folder of recorded teleop episodes (ALOHA-style HDF5) to convert instead of running the
  # scripted expert; required on a hardware task (a station has no scripted expert).
  c.data.teleop_dir = ''
  # Share of demonstration windows in each batch once rollouts exist (the rest: every round's
  # rollouts, uniformly over windows).
  c.data.demo_fraction = 0.5
  # How windows are drawn from each dataset: 'pool' (without replacement from a few buffered
  # episodes: little memory, for images), 'uniform' (every episode in memory, windows uniformly
  # with replacement over the whole dataset) or 'auto' (uniform with obs='state', else pool).
  c.data.sampler = 'auto'
  # With the uniform sampler: target share of each sample kind in a dataset's draws, corrected by
  # importance weights (habc.data.sampler). All 0: uniform over windows.
  c.data.kind_fractions = ml_collections.ConfigDict(
      {'success': 0.0, 'failure': 0.0, 'intervention': 0.0, 'unlabelled': 0.0})

  c.rollout = ml_collections.ConfigDict()
  c.rollout.episodes_per_round = 30
  # Control steps executed from each predicted chunk before the policy is asked again. Equal to
  # credit.next_offset so that "the next state" of a window is the next decision.
  c.rollout.execute_steps = 8
  c.rollout.time_limit = 0  # Control steps per episode; 0: the task's own limit.
  # Rows per jitted policy call: the episodes waiting for a chunk are served in calls of exactly
  # this many rows (the last padded). A fixed shape makes an episode's actions bit-identical
  # however episodes share calls, and XLA's results differ in the last bits between batch sizes,
  # so it is part of the run's identity. 1: every row alone, the cheapest when workers are
  # served as they become ready (about one row waits per call; a call of 2 rows costs 1.4x one
  # of 1 here, results/bench). 0: one call padded to all the pool's episode slots (before
  # issue 25's change; the study preset keeps it, so that its runs share one code path).
  c.rollout.policy_batch = 1
  # Where environments and the operator come from ('module:callable'); tests swap in fakes.
  c.rollout.env_factory = 'habc.envs:make'
  c.rollout.operator_factory = 'habc.envs.operator:SimulatedOperator'

  c.operator = ml_collections.ConfigDict()
  c.operator.enabled = True
  # Share of failing episodes the operator completes (the paper's operator: about half).
  c.operator.takeover_prob = 0.5
  # Control steps between the operator noticing a failure and taking the controls. Issue 26's
  # credit variant raises it: the policy does more damage before the rescue, and naive credit
  # labels that damage with the rescued episode's success.
  c.operator.reaction_steps = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.episodes = 25
  c.eval.seed_offset = 1_000_000  # Evaluation seeds never overlap training seeds.
  c.eval.video_camera = 'top'  # Camera whose frames go into the report's strips; '' for none.
  c.eval.strip_frames = 8

  c.pipeline = ml_collections.ConfigDict()
  c.pipeline.rounds = 3
  c.pipeline.sft_steps = 10_000  # At learner.sft_actor_lr (see habc.analysis.policy_fit).
  c.pipeline.steps_per_round = 600
  c.pipeline.checkpoint_every = 300  # Learner steps between checkpoints inside a stage.
  c.pipeline.keep_checkpoints = 2
  c.pipeline.log_every = 50
  # habc_ir: intervention reweighting switches on from this round on (-1: never switch; the
  # method.intervention_reweighting value then holds throughout).
  c.pipeline.intervention_reweighting_from_round = -1

  c.runtime = ml_collections.ConfigDict()
  c.runtime.num_workers = 2  # Environment worker processes (one per core here).
  # Episodes each worker process runs at once, interleaved: while one waits for its chunk the
  # worker steps another. With rollout.policy_batch >= 1 the episodes are the same for any value
  # and any num_workers (tests/test_reproducible_sampling.py); with policy_batch 0 both set the
  # padding, and so the last bits.
  c.runtime.episodes_per_worker = 2
  c.runtime.progress = True  # tqdm bars.
  # 'steps:START-END': a JAX profiler trace of the learner updates from step START to END into
  # <workdir>/logs/profile, for TensorBoard's profile plugin (docs/profiling.md). '': off.
  c.runtime.profile = ''
  # Learner updates per device call in the training loop (habc.learning.loop): K > 1 runs K
  # updates as one lax.scan between log and checkpoint boundaries (the same parameters as single
  # updates within float tolerance, tested); steps before a boundary that do not fill K run one
  # by one. 1: a call per update, which costs ~4 ms of host time per update here (dispatch of
  # the ~300 state arrays), a sixth of a state-preset update (results/bench/learner_issue25.md).
  c.runtime.steps_per_dispatch = 10
  return c


def apply_preset(c: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
  """Sets the sizes of a preset, in place.

  smoke:   seconds per stage, for tests: state observations, a tiny model, a handful of episodes.
  default: the whole pipeline on a 2-core CPU in about 30-85 minutes (state observations;
           sessions 4-5, with other runs sharing the machine: demos + SFT + evaluation 23-41 min,
           then three rounds 5-17 min on pouch and insert, 18-42 min on fold).
  study:   issue 26's comparison: the default's settings with the paper's 100 rollouts a round,
           100 evaluation trials per checkpoint and longer rounds (results/notes.md, session 17).
  paper:   the paper's scale: 200 demos, 100 rollouts a round, 6k steps a round at batch 256,
           50 evaluation trials, vision.
  """
  if preset not in PRESETS:
    raise ValueError(f'Unknown preset {preset!r}; choose one of {", ".join(PRESETS)}.')
  c.preset = preset
  if preset == 'smoke':
    c.obs = 'state'
    c.cameras = ()
    c.image_size = 32
    c.model.embed_dim = 32
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.mlp_dim = 64
    c.model.patch_size = 8
    c.model.action_horizon = 8
    c.model.flow_steps = 2
    c.model.critic_hidden = (32,)
    c.credit.next_offset = 4
    c.credit.min_human_steps = 4
    c.method.warmup_steps = 2
    c.critic.phase_steps = 1
    c.critic.holdout_fraction = 0.3  # 1 of the 4 episodes a round.
    c.critic.diagnostic_windows = 256
    c.learner.batch_size = 8
    c.data.num_demos = 4
    c.rollout.episodes_per_round = 4
    c.rollout.execute_steps = 8
    c.rollout.time_limit = 90
    c.eval.episodes = 4
    c.eval.video_camera = ''
    c.eval.strip_frames = 4
    c.pipeline.rounds = 2
    c.pipeline.sft_steps = 6
    c.pipeline.steps_per_round = 4
    c.pipeline.checkpoint_every = 3
    c.pipeline.log_every = 2
  elif preset == 'default':
    c.obs = 'state'
    c.cameras = ()
    # g_t held at 1 for the first sixth of round 1 (600 steps a round); the paper keeps 500 of 6k.
    c.method.warmup_steps = 100
    # More of the windows that carry a weight in each batch, importance-corrected (state
    # observations: the uniform sampler holds every episode; results/notes.md, session 15).
    c.data.kind_fractions.update({'success': 0.4, 'failure': 0.25, 'intervention': 0.2,
                                  'unlabelled': 0.15})
  elif preset == 'study':
    # Issue 26: the paper's per-round scale on state observations, on this 2-core CPU.
    apply_preset(c, 'default')
    c.preset = 'study'
    c.rollout.episodes_per_round = 100  # As the paper.
    # One policy call padded to every slot, as the study's first runs had (its runs share one
    # code path; episodes_per_worker must stay 1 for the same reason: it sets the padding).
    c.rollout.policy_batch = 0
    c.runtime.episodes_per_worker = 1
    c.eval.episodes = 100  # Per checkpoint, on initial states shared by every method (paired).
    c.pipeline.rounds = 3
    # Sized by the held-out critic curve of a tuning run (insert, seed 100, round 1 of 100
    # rollouts): AUC and V_e R^2 level off by 250-500 critic-only updates and then drift down
    # (results/notes.md, session 17). The actor gets the rest of the round.
    c.pipeline.steps_per_round = 2000
    c.critic.phase_steps = 500
    c.critic.curve_every = 250
    # The efficiency target stays the default ('td', DESIGN.md), as issue 26 asks. Session 17's
    # evidence points both ways: the Monte-Carlo target is stable in the toy and had the higher
    # held-out R^2 on 4 of 5 fold splits, but its fold run ended 32 points below TD's at round 3
    # (one seed, 25 trials, paired [+9, +51] for TD). The study adds a monte_carlo HABC cell.
    c.method.warmup_steps = 250
    c.pipeline.checkpoint_every = 500
    c.pipeline.log_every = 50
  elif preset == 'paper':
    c.obs = 'vision'
    c.data.num_demos = 200
    c.rollout.episodes_per_round = 100
    c.eval.episodes = 50
    c.pipeline.rounds = 3
    c.pipeline.sft_steps = 6000
    c.pipeline.steps_per_round = 6000
    c.pipeline.checkpoint_every = 1000
    c.pipeline.log_every = 100
    c.learner.batch_size = 256
  return c


def make_config(preset: str = 'default') -> ml_collections.ConfigDict:
  """The base config with the pipeline sections and the sizes of ``preset``."""
  c = base.get_config()
  add_pipeline_sections(c)
  return apply_preset(c, preset or 'default')
