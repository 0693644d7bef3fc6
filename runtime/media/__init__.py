"""Media I/O on top of ``runtime.core``: video reading and writing with timestamps and audio (``video``), image
loading and frame preparation (``preprocess``), face framing (``framing``) and the generated sample clips
(``samples``). It imports only ``runtime.core`` and itself (``tests/test_layers.py`` checks), never torch.
"""
