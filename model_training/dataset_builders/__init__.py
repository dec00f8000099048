"""Data set builders: OpenClipart-ML and OpenClipart-Scenes (no torch needed).

Run `python -m model_training.dataset_builders --help`.
"""
