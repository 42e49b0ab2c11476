"""Experiments: which variant of a campaign works, and what a campaign adds.

:mod:`retain.experiments.stats` holds the statistics, :mod:`retain.experiments.analysis`
reads a campaign's arms and outcomes from the store (``retain experiments report``).
"""

from retain.experiments.stats import sample_size

__all__ = ["sample_size"]
