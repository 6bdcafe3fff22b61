"""Hu et al. (QIMS 2024): the project's own method. Stage 1 is the supervised step every supervised method
shares (``step.supervised_step``); stage 2 is WGAN-GP on unaligned pairs with WGAN-VGG's critic and this
project's structure term (``loss``). Presets: paper-stage1, paper-stage2, cpu-*, gpu-*, ablations."""
