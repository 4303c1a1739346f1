"""The actor/learner split over robot stations (layer 4, docs/architecture.md): stations, shared
storage, the multi-host learner, start-up checks of the places a run writes to."""
