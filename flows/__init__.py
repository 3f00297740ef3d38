"""Prefect flows: the nightly run over object storage, thin wrappers around `pipeline`."""
