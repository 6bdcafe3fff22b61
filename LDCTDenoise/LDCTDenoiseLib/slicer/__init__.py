"""The Slicer side: the only package that may import ``slicer``, ``qt`` or ``vtk``.

``logic`` (denoise and compare volume nodes; MRML only, so CI tests it with slicer-core),
``mrml_bridge`` (nodes <-> arrays with geometry, tables, charts), ``process`` (the background child
process with progress and cancel) and ``worker`` (that child), ``requirements`` (which Python
packages the module needs, and the first-run installer), ``settings`` (the settings kept between
sessions) and ``widget`` (the module panel, Qt). This ``__init__`` imports nothing, so the worker
runs with no Slicer present.
"""
