"""Data utilities: label orders now; loaders, samplers and transforms build on these."""

from .labels import DATASET_CLASSES, DFEW_CLASSES, FERV39K_CLASSES, MAFW_CLASSES, dataset_classes

__all__ = ["DATASET_CLASSES", "DFEW_CLASSES", "FERV39K_CLASSES", "MAFW_CLASSES", "dataset_classes"]
