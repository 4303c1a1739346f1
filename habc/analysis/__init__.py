"""Reading runs after the fact (layer 5, docs/architecture.md): RESULTS.md from results/, the
policy's fit of its own demonstrations."""
