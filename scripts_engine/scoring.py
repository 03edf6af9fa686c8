"""The scoring pipeline: a batch of customers in, tag scores, hits and a profile each out.

:class:`Engine` ties together the grid's rule tags, the fitted propensity and inference
models, and the profile selection policy. It works in chunks of :data:`CHUNK` customers so
the arrays stay in the CPU cache; every step inside a chunk is a numpy operation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scripts_engine import propensity as prop
from scripts_engine.config import Settings
from scripts_engine.errors import ScorerNotFitted
from scripts_engine.features import Batch
from scripts_engine.grid import Grid, load_grid
from scripts_engine.profiles import Assignment, ProfileCatalog, SelectionPolicy, TopScoringHits
from scripts_engine.tags import RuleTags, TagScores

CHUNK = 65_536


@dataclass(frozen=True)
class ScoreResult:
    """Scores of a batch: (N, T) arrays plus the profile assignment."""

    engine: Engine
    batch: Batch
    tags: TagScores
    assignment: Assignment

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def hit_counts(self) -> npt.NDArray[np.int8]:
        return self.tags.hits.sum(axis=1, dtype=np.int8)

    def explain(self, i: int) -> dict[str, Any]:
        """One customer's assignment with its reason: scores, hits, substitutions."""
        return self.engine.explain(
            customer_id=str(self.batch.ids[i]),
            scores=self.tags.scores[i],
            hits=self.tags.hits[i],
            inferred=self.tags.inferred[i],
            profile_index=int(self.assignment.profile_index[i]),
            substituted=self.assignment.substituted[i],
            policy=self.assignment.policy,
        )


def model_version(settings: Settings) -> str:
    """The saved model's version (its sha256, from its manifest) that stored scores are kept
    under; "" when it has none."""
    try:
        return str(prop.read_manifest(settings.resolved_model_path).get("model_sha256", ""))
    except Exception:  # noqa: BLE001 - the version is informative only
        return ""


class Engine:
    """Scores customers on the grid and picks their profiles."""

    def __init__(
        self,
        grid: Grid,
        model: prop.TrainedModel | None = None,
        policy: SelectionPolicy | None = None,
    ):
        if model is not None:
            model.check_grid(grid)
        self.grid = grid
        self.model = model
        self.profiles = ProfileCatalog(grid)
        self.policy = policy or TopScoringHits(
            grid.thresholds,
            affinity=getattr(model, "tag_affinity", None),
            base_rate=getattr(model, "tag_base_rate", None),
        )
        self.rules = RuleTags(grid)
        self.thresholds = np.asarray(grid.thresholds, dtype=np.float32)
        self.model_tags = [i for i, t in enumerate(grid.tags.values()) if t.kind == "propensity"]

    @classmethod
    def load(cls, settings: Settings, *, model_path: Path | None = None) -> Engine:
        """The grid from ``personas/`` and the saved model (default: the state folder's)."""
        grid = load_grid(settings.personas_dir / "grid.yaml")
        return cls(grid, prop.load(model_path or settings.resolved_model_path, grid))

    def score_tags(
        self, batch: Batch, *, model_scores: Mapping[str, np.ndarray] | None = None
    ) -> TagScores:
        """Tag scores, hits and inference flags for a whole batch (no profiles)."""
        return self._run(batch, model_scores, select=False)[0]

    def score(
        self, batch: Batch, *, model_scores: Mapping[str, np.ndarray] | None = None
    ) -> ScoreResult:
        """Tags and profiles for a batch.

        Args:
            batch: validated customers.
            model_scores: scores of model tags computed elsewhere (tag name to an array of
                one score per customer), used instead of the fitted model's.
        """
        tags, assignment = self._run(batch, model_scores, select=True)
        assert assignment is not None
        return ScoreResult(engine=self, batch=batch, tags=tags, assignment=assignment)

    def stored_scoring(self, batch: Batch) -> list[dict[str, Any] | None]:
        """Each customer's scores and profile as they are stored with the customer (so that
        rendering a stored customer needs no re-scoring): tags, hits, inferred, profile and
        policy; None for a customer who opted out of profiling."""
        out: list[dict[str, Any] | None] = [None] * len(batch)
        keep = np.array([not batch.value("profiling_opt_out", i) for i in range(len(batch))],
                        dtype=np.bool_)  # fmt: skip
        if keep.any():
            result = self.score(batch.take(keep))
            for j, i in enumerate(np.flatnonzero(keep)):
                e = result.explain(j)
                out[int(i)] = {k: e[k] for k in ("tags", "hits", "inferred", "profile", "policy")}
        return out

    def assign(self, tags: TagScores) -> Assignment:
        """Profiles for scores computed elsewhere (N, T)."""
        return self.profiles.assign(tags.scores, tags.hits, self.policy)

    def _run(
        self, batch: Batch, model_scores: Mapping[str, np.ndarray] | None, *, select: bool
    ) -> tuple[TagScores, Assignment | None]:
        n, t = len(batch), len(self.grid.tags)
        # tag-major (T, N) throughout; callers get (N, T) views of the same memory
        scores = np.empty((t, n), dtype=np.float32)
        missing = np.empty((t, n), dtype=np.bool_)
        hits = np.empty((t, n), dtype=np.bool_)
        chosen = np.empty((t, n), dtype=np.bool_) if select else None
        index = np.empty(n, dtype=np.int16) if select else None
        thr = self.thresholds[:, None]
        choose_t = getattr(self.policy, "choose_t", None)
        k = self.profiles.k
        for start in range(0, n, CHUNK):
            part = batch.take(slice(start, start + CHUNK)) if n > CHUNK else batch
            stop = start + len(part)
            given = {name: v[start:stop] for name, v in (model_scores or {}).items()}
            s_t, m_t = self._score_chunk(part, given)
            scores[:, start:stop] = s_t
            missing[:, start:stop] = m_t
            h_t = hits[:, start:stop]
            np.greater_equal(s_t, thr, out=h_t)
            if chosen is not None and index is not None:
                if choose_t is not None:
                    c_t = choose_t(s_t, h_t, k)
                else:
                    c_t = np.ascontiguousarray(self.policy.choose(s_t.T, h_t.T, k).T)
                chosen[:, start:stop] = c_t
                index[start:stop] = self.profiles.from_chosen_t(c_t)
        tags = TagScores(scores=scores.T, hits=hits.T, inferred=missing.T)
        if chosen is None or index is None:
            return tags, None
        assignment = Assignment(
            profile_index=index,
            chosen=chosen.T,
            substituted=(chosen & ~hits).T,
            policy=self.policy.name,
        )
        return tags, assignment

    def _score_chunk(
        self, batch: Batch, given: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tag-major (T, n) scores and missing-input flags of one chunk."""
        n, t = len(batch), len(self.grid.tags)
        scores_t = np.zeros((t, n), dtype=np.float32)
        missing_t = np.zeros((t, n), dtype=np.bool_)
        self.rules.score_into(batch, scores_t, missing_t)
        model = self.model
        for j in self.model_tags:
            name = self.grid.tag_names[j]
            if name in given:
                scores_t[j] = given[name]
                continue
            if model is None:
                raise ScorerNotFitted(
                    f"the {name} tag needs a fitted model; run `scripts-engine train`"
                )
            X = prop.design_matrix(batch, model.features[name])
            scores_t[j] = model.propensity[name].predict_proba(X)[:, 1]
            # the boosted trees route missing values down learned branches: inferred, and said so
            missing_t[j] = np.isnan(X).any(axis=1)
        if model is None:
            return scores_t, missing_t
        for j in self.rules.index:
            rows = np.flatnonzero(missing_t[j])
            if rows.size:
                inf = model.inference[self.grid.tag_names[j]]
                X = prop.design_matrix(batch.take(rows), inf.features)
                scores_t[j, rows] = np.clip(inf.estimator.predict(X), 0.0, 1.0)
        return scores_t, missing_t

    # --- explanations -------------------------------------------------------------------

    def explain(
        self,
        *,
        customer_id: str,
        scores: np.ndarray,
        hits: np.ndarray,
        inferred: np.ndarray,
        profile_index: int,
        substituted: np.ndarray,
        policy: str,
    ) -> dict[str, Any]:
        names = self.grid.tag_names
        specs = self.grid.tags
        profile = self.profiles.profiles[profile_index]
        hit_names = [names[j] for j in np.flatnonzero(hits)]
        sub_names = [names[j] for j in np.flatnonzero(substituted)]
        inf_names = [names[j] for j in np.flatnonzero(inferred)]
        full = not sub_names

        def fmt(j: int, zh: bool, threshold: bool = False) -> str:
            spec = specs[names[j]]
            parts = [f"{scores[j]:.2f}"]
            if threshold:
                parts.append(f"{'阈值' if zh else 'threshold '}{spec.threshold:g}")
            if inferred[j]:
                parts.append("倒推" if zh else "inferred")
            sep = "，" if zh else ", "
            return f"{spec.label_zh if zh else spec.label_en}({sep.join(parts)})"

        chosen = [names.index(t) for t in profile.tags]
        chosen.sort(key=lambda j: (-int(hits[j]), -float(scores[j]), j))
        hit_order = sorted(
            (int(j) for j in np.flatnonzero(hits)), key=lambda j: (-float(scores[j]), j)
        )
        matched_zh = "、".join(fmt(j, True) for j in hit_order)
        matched_en = ", ".join(fmt(j, False) for j in hit_order)
        reason_zh = f"命中{len(hit_names)}/{len(names)}个标签" + (
            f"：{matched_zh}" if matched_zh else ""
        )
        reason_en = f"{len(hit_names)} of {len(names)} tags hit" + (
            f": {matched_en}" if matched_en else ""
        )
        reason_zh += f"。画像{profile.id}「{profile.name_zh}」"
        reason_en += f". Profile {profile.id} ({profile.name_en})"
        if full:
            reason_zh += "，完全匹配"
            reason_en += ", full match"
        else:
            subs_zh = "、".join(fmt(j, True, True) for j in chosen if substituted[j])
            subs_en = ", ".join(fmt(j, False, True) for j in chosen if substituted[j])
            reason_zh += f"，部分匹配：命中不足{self.profiles.k}个，以相近标签{subs_zh}替代"
            reason_en += f", partial match: fewer than {self.profiles.k} hits, nearest tags substituted: {subs_en}"
        return {
            "customer_id": customer_id,
            "tags": {names[j]: round(float(scores[j]), 4) for j in range(len(names))},
            "hits": hit_names,
            "inferred": inf_names,
            "profile": {
                "id": profile.id,
                "name_zh": profile.name_zh,
                "name_en": profile.name_en,
                "tags": [names[j] for j in chosen],
                "match": "full" if full else "partial",
                "substituted": [names[j] for j in chosen if substituted[j]],
            },
            "policy": policy,
            "reason_zh": reason_zh,
            "reason_en": reason_en,
        }
