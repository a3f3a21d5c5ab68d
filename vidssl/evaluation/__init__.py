"""Evaluation of a trained backbone: retrieval features and top-k, held-out probes, factor scores, plots.

Depends on the engine (to load backbones and iterate clips); never on the pipeline.
"""
