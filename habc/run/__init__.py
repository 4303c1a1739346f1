"""The single-machine loop (layer 3, docs/architecture.md): pipeline, backend, rollout, recorder,
evaluation, critic diagnostics, report, checkpoints, metrics writer, SFT sharing."""
