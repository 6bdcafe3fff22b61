"""Pix2Pix (Isola et al., CVPR 2017): a U-Net generator trained as a conditional GAN on aligned pairs."""
