"""Contrastive method cores (memory bank, queue, losses) and, later, the method registry."""
