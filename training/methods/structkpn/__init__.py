"""StructKPN (Xu et al., ICIP 2021): kernel prediction network and its structure-aware loss."""
