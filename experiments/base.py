"""Shared defaults of every experiment; each method file overrides a few values.

Sections: ``model`` (the VLA and the critic heads), ``credit`` (credit assignment and windows),
``method`` (how actor weights are made), ``learner`` (optimisation). The pipeline sections
(``data``, ``rollout``, ``eval``, presets) are added by ``experiments.presets``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'habc'
  c.task = 'fold'
  c.seed = 0
  # 'vision': three cameras + proprioception + instruction. 'state': proprioception + privileged
  # object state through a small MLP encoder (same method, much faster on a CPU).
  c.obs = 'vision'
  c.image_size = 64
  c.cameras = ('top', 'wrist_left', 'wrist_right')

  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 128
  c.model.num_layers = 2
  c.model.num_heads = 4
  c.model.mlp_dim = 256
  c.model.patch_size = 16  # 64x64 images -> a 4x4 grid of patch tokens per camera.
  c.model.max_instruction_len = 32
  c.model.action_horizon = 16  # H: steps per action chunk.
  c.model.flow_steps = 5  # Euler integration steps when sampling a chunk.
  # Where the critic heads get phi(s):
  #   'separate' (default): a small encoder of their own. The actor's pretrained features are
  #     untouched by critic gradients, and s_{t+k} costs a cheap forward pass, not the VLA trunk.
  #   'detached': the actor trunk's features with stop_gradient (the heads alone learn).
  #   'shared': the actor trunk's features, critic gradients flow into the trunk.
  c.model.critic_encoder = 'separate'
  c.model.critic_hidden = (128, 128)
  c.model.efficiency_scale = 10.0  # V_e = -scale * softplus(.): the range of decisions-to-go.
  # Parameter subtrees (top-level names: encoder, action_expert, critic) held frozen: no updates
  # and no optimiser state.
  c.model.frozen = ()
  # The observation backbone (habc.networks.backbones: 'builtin' or a registered larger VLA), and
  # an optional checkpoint of pretrained backbone weights loaded into the 'encoder' subtree.
  c.model.backbone = 'builtin'
  c.model.pretrained_checkpoint = ''

  c.credit = ml_collections.ConfigDict()
  c.credit.naive = False  # True: every policy window gets the episode outcome (ablation).
  c.credit.min_human_steps = 10
  # s_{t+k}: k control steps ahead. Default: one executed chunk (the policy decides once per
  # chunk, so a "step" of the advantage is one decision). V_e then counts chunks to success.
  c.credit.next_offset = 8

  c.method = ml_collections.ConfigDict()
  # 'habc': both heads + gate. 'habc_v': viability head only. 'bc': weight 1 everywhere.
  # 'recap': distributional value, weight 1[A >= eps]. 'awr': one scalar critic, exp(A / beta).
  c.method.weighting = 'habc'
  c.method.intervention_reweighting = False
  c.method.pre_intervention_weight = 0.0
  c.method.warmup_steps = 500
  # The scale of the merged advantage inside the gate's tanh (habc.learning.objectives.habc_signal):
  # 'batch_iqr' divides it by advantage_temperature x a robust spread (interquartile range / 1.349)
  # over the batch's online windows, 'batch_std' by the same times its std (outliers inflate it:
  # results/notes.md, session 16);
  # 'none' is the paper's g = 1 + tanh(A), which saturates on 26-55% of windows (notes, session 15).
  c.method.advantage_norm = 'batch_iqr'
  c.method.advantage_temperature = 2.0
  c.method.weight_eps = 1e-6
  c.method.use_autonomous = True  # False: autonomous rollout windows get weight 0 (imit_dagger).
  c.method.recap_bins = 51
  c.method.recap_gamma = 0.99
  c.method.recap_failure_cost = 100.0
  c.method.recap_mc_mix = 0.5
  c.method.recap_eps = 0.0
  c.method.awr_gamma = 0.99
  c.method.awr_beta = 1.0
  c.method.awr_max_weight = 20.0

  c.learner = ml_collections.ConfigDict()
  c.learner.batch_size = 64
  c.learner.actor_lr = 3e-4  # Online rounds.
  # Actor learning rate of the SFT stage (the first pipeline.sft_steps updates); 0: actor_lr.
  # At 3e-4 for 1,500 steps the SFT policy fit its demonstrations no better than a linear map
  # (python -m habc.policy_fit; results/notes.md, session 3).
  c.learner.sft_actor_lr = 1e-3
  # Over the SFT stage's last N updates the actor's rate falls linearly from sft_actor_lr to
  # actor_lr, so the SFT policy ends at the online rate. 0: no fall (every run in results/ but
  # sft_anneal/ and the anneal diagnostics). Why it exists: results/notes.md, sessions 7-9.
  c.learner.sft_anneal_steps = 0
  c.learner.critic_lr = 3e-4
  c.learner.weight_decay = 1e-4
  # The critic's own AdamW weight decay; negative: learner.weight_decay.
  c.learner.critic_weight_decay = 0.01
  c.learner.grad_clip = 1.0
  c.learner.critic_loss_weight = 1.0
  c.learner.huber_delta = 1.0

  # How the critic is trained and checked (habc.run.critic_diagnostics, results/notes.md
  # session 15).
  c.critic = ml_collections.ConfigDict()
  # A round's first N learner updates train the critic alone on the new data (the actor's
  # parameters and optimiser state are untouched); they count towards pipeline.steps_per_round.
  c.critic.phase_steps = 150
  # Target of the efficiency head. 'td': y_e = -1 + stopgrad(V_e(s_{t+k})), DESIGN.md's TD target.
  # 'monte_carlo': minus the decisions left in the (successful) episode, the value the TD chain
  # converges to. TD with no discount bootstraps on nearby states that share features; in the toy
  # of tests/test_learner.py it ran away (V_e ~ -500 at the toy's critic rate, ~ -5,000 at the
  # default's) and at the toy's rate collapsed to 0 by 600 updates (results/notes.md, session 17).
  c.critic.efficiency_target = 'td'
  # Share of each round's rollouts held out of that round's training (both losses) to measure its
  # critic on unseen episodes; they join the training mix from the next round on.
  c.critic.holdout_fraction = 0.2
  # Held-out diagnostics after each round's training (logs/critic_round_XXX.json).
  c.critic.diagnostics = True
  c.critic.diagnostic_windows = 4096  # At most this many windows measured per split.
  # Every N updates of a round (a multiple of pipeline.log_every), the critic on the round's
  # held-out split -> logs/critic_curve_round_XXX.json: the learning curve that shows whether a
  # round trains its critic long enough. 0: off.
  c.critic.curve_every = 0
  return c
