"""Comparing volumes with a normal-dose CT: regions, PSNR/SSIM/RMSE, HU densities, registration, reports.

``roi`` (regions from boxes, labels or HU ranges), ``metrics`` (per-slice figures in stated windows),
``comparison`` (several volumes against the NDCT, paired t-tests), ``density`` (KDE curves, one
shared bandwidth), ``alignment`` (SimpleITK registration) and ``report`` (CSV, JSON, tables,
figures). Needs no torch. May import ``io``, ``errors``, ``atomic``, ``optional``.
"""
