"""The CVFP algorithm: model, stream engine, Phase 1 objectives and trainers, rank metrics."""
