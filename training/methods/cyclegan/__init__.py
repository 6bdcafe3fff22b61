"""CycleGAN (Zhu et al., ICCV 2017): two ResNet generators and two PatchGANs trained on unpaired LDCT and NDCT."""
