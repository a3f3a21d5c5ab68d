"""The training engine: the pretrain/fine-tune loops, data-parallel helpers and checkpoints.

Depends on data, models and methods; knows nothing of trackers, reports or orchestration.
"""
