"""Hu et al. (QIMS 2024): the project's own method. Its presets stay in ``training/presets``
(paper-stage1, paper-stage2, cpu-*, gpu-*, ablations); its losses are ``training.losses``."""
