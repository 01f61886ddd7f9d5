"""Benchmarks of flask-openfactory against its baselines, measured in one run.

Run ``python -m bench`` (``--quick`` for a short pass). Each figure is
measured next to its baseline in the same process tree and on the same
broker, because numbers taken on different days or machines cannot be
compared honestly. Nothing here is imported by the package itself.
"""
