"""Prefect flows and deployments over the DVC stages (workspace files, not part of the vidssl package)."""
