"""Look-alike digits: clusters of training rows that look alike, and rare looks learnt more often (--rare-looks).

A digit's rows fall into clusters of near twins (k-means on the pixels' first principal components, within
each digit). A writer's style the training rows have few twins of lands in a small cluster; the test rows'
new hands have more such digits than a fold of train.csv does. `--rare-looks K` repeats every row of a cluster
smaller than the median row's up to K more times an epoch, and cuts the epochs so that the images seen stay
the same (docs/experiments.md, stops 41-43: 10 % fewer errors on folds of held-out look-alike clusters).
Pure NumPy and scikit-learn: deterministic for the same rows, here and in a Ray worker.
"""

import numpy as np

COMPONENTS = 50  # the principal components k-means works on
CLUSTERS_PER_DIGIT = 100


def look_clusters(images, labels, clusters_per_digit: int = CLUSTERS_PER_DIGIT, seed: int = 0):
    """(features, clusters): the rows' first principal components (N, <= 50) and each row's cluster of
    look-alike digits, digit * clusters_per_digit + k (k < clusters_per_digit; fewer when a digit has fewer rows)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    pixels = np.asarray(images).reshape(len(images), -1)
    components = min(COMPONENTS, len(pixels), pixels.shape[1])
    features = PCA(components, random_state=seed).fit_transform(pixels)
    clusters = np.empty(len(labels), dtype=np.int64)
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        count = min(clusters_per_digit, len(rows))
        found = KMeans(count, n_init=1, random_state=seed).fit_predict(features[rows]) if count > 1 else 0
        clusters[rows] = int(digit) * clusters_per_digit + found
    return features, clusters


def rare_look_rows(images, labels, extra_at_most: int, clusters_per_digit: int | None = None) -> np.ndarray:
    """Every row once, then the rows of rare looks again: a row whose cluster holds s rows, when the median row's
    cluster holds m, comes round(m / s - 1) more times (at most extra_at_most, never fewer than 0)."""
    rows = np.arange(len(labels))
    if extra_at_most < 1 or len(labels) == 0:
        return rows
    _, clusters = look_clusters(images, labels, clusters_per_digit or CLUSTERS_PER_DIGIT)
    sizes = np.bincount(clusters)[clusters]
    copies = np.clip(np.round(np.median(sizes) / sizes - 1), 0, extra_at_most).astype(np.int64)
    return np.concatenate([rows, np.repeat(rows, copies)])


def epochs_for_same_images(epochs: int, rows: int, images_an_epoch: int) -> int:
    """The epochs of images_an_epoch images that see about as many images as `epochs` epochs of `rows` did."""
    return max(1, round(epochs * rows / images_an_epoch))


def most_images_seen(epochs: int, rows: int, extra_images_at_most: int) -> tuple[int, int]:
    """(images an epoch, epochs) of the model of `rows` rows plus up to extra_images_at_most more an epoch (rare
    looks' copies: rows x K; pseudo-labelled test images: their count) that sees the most images in its scaled
    epochs: the work a preset may take before it has seen its data (tests/test_training_core.py's budget)."""
    worst = max(range(rows, rows + extra_images_at_most + 1),  # every count of extra images the limit allows
                key=lambda images_an_epoch: images_an_epoch * epochs_for_same_images(epochs, rows, images_an_epoch))
    return worst, epochs_for_same_images(epochs, rows, worst)
