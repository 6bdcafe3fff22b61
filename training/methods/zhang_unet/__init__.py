"""The U-Net of Zhang et al. (QIMS 2023) trained with MSE, and the study's point: retraining on a
user's few scans (``ldct-train finetune``, ``training.finetune``)."""
