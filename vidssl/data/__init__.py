"""Data: embedded dataset, decoding, frame store, lists, checks, clips."""
