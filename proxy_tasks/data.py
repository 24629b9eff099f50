"""Datasets that ship with installed packages: nothing is downloaded, ever.

- digits and breast_cancer: scikit-learn's bundled copies (load_digits,
  load_breast_cancer read files inside the sklearn package);
- English text: the standard library's pydoc_data.topics (the help pages of
  Python's syntax, ~465k characters), for a character-level language model.

- digits-like images without end: a Gaussian per class fitted to the
  digits' training split (digits_gaussians), for streaming tasks that must
  never show an example twice.

Each loader is cached per process and returns float64 numpy arrays; tasks
convert them to tensors on their device. Splits are fixed (seed 0), so that
every optimizer and every seed sees the same train and test examples.
"""

from __future__ import annotations

import functools

import numpy as np

TEST_FRACTION = 0.2


def _standardise_and_split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Shuffle once (seed 0), hold out TEST_FRACTION, standardise with train statistics."""
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    n_test = int(round(TEST_FRACTION * len(x)))
    x_train, y_train, x_test, y_test = x[n_test:], y[n_test:], x[:n_test], y[:n_test]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # constant pixels (digits' border) stay 0
    return {"x": (x_train - mean) / std, "y": y_train, "x_test": (x_test - mean) / std, "y_test": y_test}


@functools.lru_cache(maxsize=None)
def digits() -> dict[str, np.ndarray]:
    """8 x 8 handwritten digits, 1797 images, 10 classes (x flattened to 64)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _standardise_and_split(bunch.data.astype(np.float64), bunch.target.astype(np.int64))


@functools.lru_cache(maxsize=None)
def breast_cancer() -> dict[str, np.ndarray]:
    """569 tumours, 30 features, binary label."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return _standardise_and_split(bunch.data.astype(np.float64), bunch.target.astype(np.int64))


@functools.lru_cache(maxsize=None)
def python_help_text() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(train ids, test ids, vocabulary) of pydoc_data.topics as characters.

    Topics are joined in sorted order; the last TEST_FRACTION of the
    characters is the test split. Characters seen fewer than 10 times map to
    one "rare" symbol, leaving ~90 symbols.
    """
    from pydoc_data.topics import topics

    text = "\n".join(topics[key] for key in sorted(topics))
    chars, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_counts=True)
    common = chars[counts >= 10]
    lookup = {int(c): i + 1 for i, c in enumerate(common)}  # 0 is the rare symbol
    ids = np.array([lookup.get(int(c), 0) for c in np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)],
                   dtype=np.int64)
    vocabulary = ("<rare>",) + tuple(chr(int(c)) for c in common)
    split = int(len(ids) * (1 - TEST_FRACTION))
    return ids[:split], ids[split:], vocabulary


# Shrinkage of each class's covariance towards the pooled one (a class has
# ~144 training images for 64 pixels), and a ridge that keeps it definite.
_SHRINKAGE = 0.2
_RIDGE = 1e-3


@functools.lru_cache(maxsize=None)
def digits_gaussians() -> tuple[np.ndarray, np.ndarray]:
    """(means (10, 64), Cholesky factors (10, 64, 64)) of the standardised digits, per class.

    x = means[c] + chols[c] @ z with z ~ N(0, I) draws a new digit-like image
    of class c: as many as a streaming task needs, none of them a training
    image. Fitted on the training split of digits(); the classes overlap
    little (the Bayes classifier, quadratic here, is nearly perfect).
    """
    data = digits()
    x, y = data["x"], data["y"]
    pooled = np.cov(x, rowvar=False)
    means, chols = [], []
    for c in range(10):
        xc = x[y == c]
        cov = (1 - _SHRINKAGE) * np.cov(xc, rowvar=False) + _SHRINKAGE * pooled + _RIDGE * np.eye(x.shape[1])
        means.append(xc.mean(axis=0))
        chols.append(np.linalg.cholesky(cov))
    return np.stack(means), np.stack(chols)
