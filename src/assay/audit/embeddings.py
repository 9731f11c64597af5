"""Model-free embeddings: a fixed, deterministic vector per item for near-duplicate search when no model is given.

Each modality gets the smallest transform under which the near duplicates that matter stay close and distinct
items stay apart, with no learned weights (so an audit never depends on a model that may itself have seen the test
set, and two runs give the same vectors):

- images: grayscale (channel mean), area-downsampled to at most 16x16 (the exact area rule of OpenCV's
  ``INTER_AREA``; PIL's ``BOX`` at integer factors), minus the image's own mean, L2-normalised. Cosine similarity
  is then the Pearson correlation of the small images: unchanged by brightness/contrast shifts, barely moved by
  noise, JPEG re-encoding or a 1-pixel shift (the blur of downsampling absorbs most of it), as in the "tiny
  images" retrieval of Torralba et al. (2008).
- text: hashed character 3-5-gram counts (``char_wb``, on the normalised text of :func:`normalise_text`) with
  sublinear TF-IDF, then a fixed sparse random projection (Li, Hastie & Church 2006; distances kept by
  Johnson-Lindenstrauss) to 256 dimensions, L2-normalised. Character n-grams keep a text with a few typos close.
- tabular: rows standardised column by column (zero mean, unit variance; constant columns left centred),
  then used as they are — nearest neighbours in standard units (no L2 normalisation: the distance is the signal).

Text IDF and tabular standardisation are statistics of a dataset: embed the test split with ``reference=train`` so
that both splits live in the same space (the train split's statistics are used for both).
"""

from __future__ import annotations

import unicodedata

import numpy as np

from assay.data.dataset import Dataset
from assay.errors import DataError

__all__ = ["IMAGE_SIDE", "TEXT_DIM", "area_downsample", "image_embeddings", "model_free_embeddings", "normalise_text",
           "tabular_embeddings", "text_embeddings"]

#: Images are area-downsampled to at most this many pixels a side.
IMAGE_SIDE = 16
#: Text embeddings' dimension after the random projection.
TEXT_DIM = 256
_TEXT_HASH_FEATURES = 2**18
_PROJECTION_SEED = 0


def normalise_text(text: str) -> str:
    """NFKC (compatibility forms folded: full-width letters, ligatures), casefold, whitespace runs collapsed to one
    space and stripped — the normalisation under which two texts count as the same content."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def model_free_embeddings(dataset: Dataset, *, reference: Dataset | None = None) -> np.ndarray:
    """One float32 row per item of ``dataset`` (see the module docstring for each modality's transform).

    ``reference``: the dataset whose statistics (text IDF, tabular column means and spreads) define the space;
    default ``dataset`` itself. Give the train split when embedding the test split. It must have the same modality.
    """
    ref = dataset if reference is None else reference
    if ref.modality != dataset.modality:
        raise DataError(f"the reference is {ref.modality} data but the dataset is {dataset.modality} data",
                        where="reference", fix="embed both splits of one dataset: same modality and shape")
    if dataset.modality == "image":
        return image_embeddings(dataset.x)
    if dataset.modality == "text":
        return text_embeddings(dataset.x, reference=None if reference is None else ref.x)
    return tabular_embeddings(dataset.x, reference=None if reference is None else ref.x)


def image_embeddings(images: np.ndarray, *, side: int = IMAGE_SIDE) -> np.ndarray:
    """Grayscale, area-downsampled to at most ``side`` x ``side``, mean-centred, L2-normalised (NCHW input)."""
    x = np.asarray(images, dtype=np.float32)
    gray = x.mean(axis=1) if x.ndim == 4 else x.reshape(len(x), *x.shape[-2:])
    small = area_downsample(gray, side)
    flat = small.reshape(len(small), -1)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return _l2_normalise(flat)


def text_embeddings(texts: np.ndarray, *, reference: np.ndarray | None = None, dim: int = TEXT_DIM) -> np.ndarray:
    """Hashed char 3-5-gram sublinear TF-IDF (IDF from ``reference``, default ``texts``), fixed sparse random
    projection to ``dim``, L2-normalised."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
    from sklearn.random_projection import SparseRandomProjection

    vectoriser = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), n_features=_TEXT_HASH_FEATURES,
                                   alternate_sign=False, norm=None, lowercase=False)
    counts = vectoriser.transform([normalise_text(str(t)) for t in texts])
    ref_counts = counts if reference is None else vectoriser.transform([normalise_text(str(t)) for t in reference])
    tfidf = TfidfTransformer(sublinear_tf=True).fit(ref_counts).transform(counts)
    # The projection matrix depends only on (dim, n_features, seed): fitting on a dummy row draws it.
    projection = SparseRandomProjection(n_components=dim, random_state=_PROJECTION_SEED, dense_output=True)
    projection.fit(csr_matrix((1, _TEXT_HASH_FEATURES), dtype=tfidf.dtype))
    projected = np.asarray(projection.transform(tfidf), dtype=np.float32)
    return _l2_normalise(projected)


def tabular_embeddings(rows: np.ndarray, *, reference: np.ndarray | None = None) -> np.ndarray:
    """Rows standardised by ``reference``'s (default ``rows``') column means and standard deviations."""
    x = np.asarray(rows, dtype=np.float64)
    ref = x if reference is None else np.asarray(reference, dtype=np.float64)
    mean = ref.mean(axis=0)
    std = ref.std(axis=0)
    std[~(std > 0)] = 1.0  # constant columns: centred, not scaled
    return ((x - mean) / std).astype(np.float32)


def area_downsample(gray: np.ndarray, side: int) -> np.ndarray:
    """Box-average (N, H, W) down to at most ``side`` a side; each output pixel averages an equal share of input
    pixels, fractional edges weighted (the exact area rule, as a product of two 1-D averaging matrices)."""
    _, h, w = gray.shape
    rows = _area_matrix(h, min(h, side))
    cols = _area_matrix(w, min(w, side))
    return np.einsum("oh,nhw,pw->nop", rows, gray, cols, optimize=True).astype(np.float32)


def _area_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) matrix whose row i averages input cells [i*size/out, (i+1)*size/out), fractions weighted."""
    edges = np.arange(out + 1) * (size / out)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(size)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return (overlap / (size / out)).astype(np.float32)


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # a constant image / empty text stays the zero vector (similar to nothing)
    return (x / norms).astype(np.float32)
