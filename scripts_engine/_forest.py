"""A compiled predictor for fitted ``HistGradientBoostingClassifier`` models (binary).

scikit-learn predicts tree by tree: one pass over all rows per tree, a Python call each.
For a few hundred small trees that is the slowest step of scoring (about 45,000 customers/s
on one core). Here all trees are flattened into arrays once, and one numba-compiled loop
walks every tree for a row while the row is in cache: the same decisions as scikit-learn's
``_predict_one_from_raw_data`` (missing values, categories as bitsets, unknown categories
treated as missing), several times faster.

The flattening reads scikit-learn's fitted predictor arrays, which are not public API; so
:func:`compile_forest` checks the compiled predictions against ``predict_proba`` on the
training data and returns ``None`` (keep scikit-learn's path) if they ever differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

try:  # numba is a dependency; a broken install degrades to scikit-learn's own predictor
    from numba import njit
except ImportError:  # pragma: no cover - exercised only on a broken install
    njit = None  # type: ignore[assignment]


if njit is not None:

    @njit(cache=True, nogil=True)
    def _walk(
        X: np.ndarray,
        col_map: np.ndarray,
        recode: np.ndarray,
        lut: np.ndarray,
        roots: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        value: np.ndarray,
        is_leaf: np.ndarray,
        missing_left: np.ndarray,
        is_cat: np.ndarray,
        cat_row: np.ndarray,
        cat_left: np.ndarray,
        baseline: float,
        out: np.ndarray,
    ) -> None:
        n = X.shape[0]
        n_features = col_map.shape[0]
        row = np.empty(n_features, dtype=np.float64)
        for i in range(n):
            # the row as the trees saw it when fitted: columns re-ordered, categories re-coded
            for f in range(n_features):
                v = X[i, col_map[f]]
                if recode[f] and not np.isnan(v):
                    c = np.int64(v)
                    v = lut[f, c] if 0 <= c < lut.shape[1] and c == v else np.nan
                row[f] = v
            total = baseline
            for t in range(roots.shape[0]):
                node = roots[t]
                while not is_leaf[node]:
                    v = row[feature[node]]
                    if np.isnan(v):
                        go_left = missing_left[node]
                    elif is_cat[node]:
                        # the node's decision for every (re-coded) category, precomputed
                        go_left = cat_left[cat_row[node], np.int64(v)]
                    else:
                        go_left = v <= threshold[node]
                    node = left[node] if go_left else right[node]
                total += value[node]
            out[i] = 1.0 / (1.0 + np.exp(-total))


@dataclass
class CompiledForest:
    """All trees of a binary boosted model as flat arrays (picklable; no compiled code)."""

    roots: npt.NDArray[np.int64]
    feature: npt.NDArray[np.int64]
    threshold: npt.NDArray[np.float64]
    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    is_leaf: npt.NDArray[np.bool_]
    missing_left: npt.NDArray[np.bool_]
    is_cat: npt.NDArray[np.bool_]
    cat_row: npt.NDArray[np.int64]
    cat_left: npt.NDArray[np.bool_]
    baseline: float
    col_map: npt.NDArray[np.int64]
    recode: npt.NDArray[np.bool_]
    lut: npt.NDArray[np.float64]

    def predict_proba1(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Probability of the positive class for each row of ``X`` (float64, NaN = missing)."""
        if njit is None:  # pragma: no cover
            raise RuntimeError("numba is not available")
        X = np.ascontiguousarray(X, dtype=np.float64)
        out = np.empty(X.shape[0], dtype=np.float64)
        _walk(
            X,
            self.col_map,
            self.recode,
            self.lut,
            self.roots,
            self.feature,
            self.threshold,
            self.left,
            self.right,
            self.value,
            self.is_leaf,
            self.missing_left,
            self.is_cat,
            self.cat_row,
            self.cat_left,
            self.baseline,
            out,
        )
        return out


def _flatten(model: Any) -> CompiledForest:
    predictors = [trees[0] for trees in model._predictors]  # one tree per iteration (binary)
    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    offsets, total, bit_rows = [], 0, 0
    parts: dict[str, list[np.ndarray]] = {
        k: []
        for k in (
            "feature",
            "threshold",
            "left",
            "right",
            "value",
            "is_leaf",
            "missing_left",
            "is_cat",
            "bitset_row",
        )
    }
    bitsets = []
    for p in predictors:
        nodes = p.nodes
        offsets.append(total)
        parts["feature"].append(nodes["feature_idx"].astype(np.int64))
        parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
        parts["left"].append(nodes["left"].astype(np.int64) + total)
        parts["right"].append(nodes["right"].astype(np.int64) + total)
        parts["value"].append(nodes["value"].astype(np.float64))
        parts["is_leaf"].append(nodes["is_leaf"].astype(np.bool_))
        parts["missing_left"].append(nodes["missing_go_to_left"].astype(np.bool_))
        parts["is_cat"].append(nodes["is_categorical"].astype(np.bool_))
        parts["bitset_row"].append(nodes["bitset_idx"].astype(np.int64) + bit_rows)
        raw = np.asarray(p.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8)
        bitsets.append(raw)
        bit_rows += raw.shape[0]
        total += len(nodes)
    left_bitsets = np.concatenate(bitsets) if bit_rows else np.zeros((1, 8), dtype=np.uint32)
    known_bitsets = np.asarray(known, dtype=np.uint32).reshape(-1, 8)
    flat = {k: np.concatenate(v) for k, v in parts.items()}
    mapping = _input_mapping(model)
    cat_row, cat_left = _category_decisions(flat, left_bitsets, known_bitsets, f_idx_map, mapping)
    del flat["bitset_row"]
    return CompiledForest(
        roots=np.asarray(offsets, dtype=np.int64),
        **flat,
        cat_row=cat_row,
        cat_left=cat_left,
        baseline=float(np.asarray(model._baseline_prediction).ravel()[0]),
        **mapping,
    )


def _in_bitset(bits: np.ndarray, c: int) -> bool:
    return bool(bits[c >> 5] & (np.uint32(1) << np.uint32(c & 31)))


def _category_decisions(
    flat: dict[str, np.ndarray],
    left_bitsets: np.ndarray,
    known_bitsets: np.ndarray,
    f_idx_map: np.ndarray,
    mapping: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Each categorical node's direction for every category, as scikit-learn decides it:
    in the node's left set: left; another category seen in training: right; unseen: the
    missing-value direction."""
    lut = mapping["lut"]
    width = int(np.nanmax(lut)) + 1 if np.isfinite(lut).any() else 1
    nodes = np.flatnonzero(flat["is_cat"] & ~flat["is_leaf"])
    cat_row = np.zeros(len(flat["is_cat"]), dtype=np.int64)
    cat_left = np.zeros((max(len(nodes), 1), width), dtype=np.bool_)
    for r, node in enumerate(nodes):
        cat_row[node] = r
        left = left_bitsets[flat["bitset_row"][node]]
        known = known_bitsets[f_idx_map[flat["feature"][node]]]
        for c in range(width):
            if _in_bitset(left, c):
                cat_left[r, c] = True
            elif _in_bitset(known, c):
                cat_left[r, c] = False
            else:
                cat_left[r, c] = flat["missing_left"][node]
    return cat_row, cat_left


def _input_mapping(model: Any) -> dict[str, np.ndarray]:
    """How the fitted trees' columns come from the input columns.

    With categorical features, scikit-learn puts an ordinal encoder in front of the trees
    (categories first, each re-coded to 0..k-1 in sorted order, unseen ones missing).
    """
    pre = getattr(model, "_preprocessor", None)
    n_in = int(model.n_features_in_)
    if pre is None:
        return {
            "col_map": np.arange(n_in, dtype=np.int64),
            "recode": np.zeros(n_in, dtype=np.bool_),
            "lut": np.full((n_in, 1), np.nan),
        }
    columns = {name: np.asarray(cols) for name, _, cols in pre.transformers_}
    cat_cols = np.flatnonzero(columns["encoder"])
    num_cols = np.flatnonzero(columns["numerical"])
    encoder = pre.named_transformers_["encoder"]
    if not (np.isnan(encoder.unknown_value) and np.isnan(encoder.encoded_missing_value)):
        raise ValueError("unexpected ordinal encoder settings")
    col_map = np.concatenate([cat_cols, num_cols]).astype(np.int64)
    recode = np.zeros(len(col_map), dtype=np.bool_)
    recode[: len(cat_cols)] = True
    lut = np.full((len(col_map), 256), np.nan)
    for k, cats in enumerate(encoder.categories_):
        for code, raw in enumerate(np.asarray(cats, dtype=np.float64)):
            if np.isnan(raw):
                continue
            if raw != int(raw) or not 0 <= raw < 256:
                raise ValueError("category codes must be integers in 0..255")
            lut[k, int(raw)] = code
    return {"col_map": col_map, "recode": recode, "lut": lut}


def compile_forest(model: Any, X_check: npt.NDArray[np.float64]) -> CompiledForest | None:
    """Flatten a fitted binary boosted classifier; ``None`` if it cannot be done exactly.

    Args:
        model: a fitted ``HistGradientBoostingClassifier`` with two classes.
        X_check: rows to compare the compiled predictions with scikit-learn's on.
    """
    if njit is None or len(getattr(model, "classes_", ())) != 2:
        return None
    try:
        forest = _flatten(model)
        ours = forest.predict_proba1(X_check)
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        log.warning("compiled predictor unavailable, using scikit-learn's: %s", exc)
        return None
    theirs = model.predict_proba(X_check)[:, 1]
    if not np.allclose(ours, theirs, rtol=0, atol=1e-9):
        log.warning("compiled predictor disagrees with scikit-learn's; using scikit-learn's")
        return None
    return forest
