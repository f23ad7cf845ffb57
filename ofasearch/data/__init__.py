"""Datasets in memory with fixed splits, and replayable augmentation."""

from ofasearch.data.augment import augment
from ofasearch.data.datasets import ImageSet, Splits, find_fashion_mnist, load_splits, resize_images
from ofasearch.data.fingerprint import DataFingerprint, data_fingerprint, data_identity
from ofasearch.data.pipeline import Pipeline, TrainBatch

__all__ = [
    "DataFingerprint",
    "ImageSet",
    "Pipeline",
    "Splits",
    "TrainBatch",
    "augment",
    "data_fingerprint",
    "data_identity",
    "find_fashion_mnist",
    "load_splits",
    "resize_images",
]
