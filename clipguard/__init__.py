"""clipguard's bottom layer: what the stream, the stage workers and training all share.

Data contracts, errors, configuration, model files, thresholds, aggregation, the
Prometheus metrics and the detector model (``clipguard.model``). Nothing here
imports ``workers``, ``pipeline`` or ``training`` (checked by import-linter).
"""
