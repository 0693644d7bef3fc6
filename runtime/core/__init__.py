"""The runtime's foundation: errors, configs, the graph contract and precision policy, the manifest, comparison,
generator feeds, keypoint normalisation, atomic file writing, the name tables and the CLI plumbing.

It imports nothing from the rest of the runtime (``tests/test_layers.py`` checks), and never torch; ``training/``,
``export/``, ``benchmarks/`` and the runtime's applications build on it.
"""
