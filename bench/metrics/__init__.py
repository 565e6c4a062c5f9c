"""Sample quality without downloads: metrics in the feature space of a classifier trained per dataset.

``classifier`` trains that classifier and ``features`` caches it and serves its features;
``distances`` (Fréchet distance, KID), ``manifold`` (precision / recall, density / coverage) and
``diversity`` (class histogram, pixel diversity) are pure functions of features, labels or pixels;
``quality`` measures samples with all of them next to the real-data floor and the mean-image ceiling;
``inception`` adds torchvision Inception-V3 features when their weights are on this machine.
"""

from ..io import CACHE_ENV
from .conditional import ClassifierSpace, class_conditional_scores, class_reference_rows
from .distances import KIDResult, frechet_distance, kernel_inception_distance, polynomial_kernel
from .diversity import ClassHistogram, class_histogram, pixel_diversity
from .features import (
    FeatureExtractor,
    FeatureExtractorConfig,
    FeatureSpace,
    LabeledImages,
    default_cache_dir,
    get_feature_extractor,
    train_classifier,
)
from .inception import (
    InceptionFeatures,
    InceptionUnavailable,
    fid_inception_torchvision,
    find_inception_weights,
    load_inception,
)
from .manifold import DensityCoverage, PrecisionRecall, density_coverage, precision_recall
from .quality import QualityConfig, evaluate_samples, reference_rows

__all__ = [
    "CACHE_ENV",
    "ClassHistogram",
    "ClassifierSpace",
    "DensityCoverage",
    "FeatureExtractor",
    "FeatureExtractorConfig",
    "FeatureSpace",
    "InceptionFeatures",
    "InceptionUnavailable",
    "KIDResult",
    "LabeledImages",
    "PrecisionRecall",
    "QualityConfig",
    "class_conditional_scores",
    "class_histogram",
    "class_reference_rows",
    "default_cache_dir",
    "density_coverage",
    "evaluate_samples",
    "fid_inception_torchvision",
    "find_inception_weights",
    "frechet_distance",
    "get_feature_extractor",
    "kernel_inception_distance",
    "load_inception",
    "pixel_diversity",
    "polynomial_kernel",
    "precision_recall",
    "reference_rows",
    "train_classifier",
]
