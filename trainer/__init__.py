"""Trainer: torch models, cross-validation and challenge-grade evaluation. Its metrics, pcg-eval and
pcg-synth need no torch."""
