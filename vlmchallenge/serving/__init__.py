"""Inference and the LitServe API."""
