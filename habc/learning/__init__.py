"""The learner: train state, partitioned optimiser, data-parallel update step."""
