"""WGAN-VGG (Yang et al., TMI 2018): the 8-layer CNN generator as a WGAN-GP with a VGG-19 perceptual loss.

Generator loss ``-E[D(G(z))] + 0.1 * L_VGG``, gradient penalty 10, Adam 1e-4 (generator) and 1e-5
(critic), 64x64 patches, its critic (``critic``, which Hu et al.'s stage 2 uses too). The report's ablations are presets
of the same code: ``generator-mse`` and ``generator-vgg`` (no critic, stage1), ``wgan-mse``.
"""
