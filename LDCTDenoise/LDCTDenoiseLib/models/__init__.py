"""The model store: model folders (manifest + safetensors weights) with SHA-256, found by name or path.

``weights`` saves, verifies and loads a model; ``catalog`` lists what is installed (bundled and in
the user cache) with each card's summary; ``normalization`` is the HU <-> network mapping stored
with the weights. May import ``networks``, ``errors``, ``atomic``, ``resources``; never the engine.
"""
