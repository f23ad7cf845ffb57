"""Datasets in memory with fixed splits, and replayable augmentation."""

from ofasearch.data.augment import augment
from ofasearch.data.datasets import ImageSet, Splits, find_fashion_mnist, load_splits

__all__ = ["ImageSet", "Splits", "augment", "find_fashion_mnist", "load_splits"]
