"""Training of the LDCTDenoise generator (Hu et al., QIMS 2024): stage 1 on NDCT with added
noise, stage 2 as a WGAN-GP on unaligned LDCT/NDCT pairs, and export of weights the module
loads. It builds on ``LDCTDenoiseLib`` (model, weights format, low-dose simulation)."""
