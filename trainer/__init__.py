"""Trainer: torch models, cross-validation and challenge-grade evaluation. Its metrics, pcg-eval and
pcg-synth need no torch.

    models      encoder (per-site CNN + attention + BiLSTM), hypernet (dynamic layer), murmur_head,
                model (ScreeningModel, ModelConfig), inference (crop-averaged fold ensemble graph)
    data        examples (features via runtime.dsp, cached; bad input), folds, crops, augment
    training    train (one fold), crossval (pcg-train), ablation (pcg-ablation)
    evaluation  metrics, summary, report, evaluate (pcg-eval)       <- numpy/matplotlib only
    synthetic   synth (pcg-synth)
"""
