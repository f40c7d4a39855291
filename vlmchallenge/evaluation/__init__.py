"""Clip metrics, OpenPack's official 1-second macro-F1, submissions and the evaluator."""
