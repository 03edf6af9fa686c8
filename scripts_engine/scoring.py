"""The scoring pipeline: a batch of customers in, tag scores, hits and a profile each out.

:class:`Engine` ties together the grid's rule tags, the fitted propensity and inference
models, and the profile selection policy. It works in chunks of :data:`CHUNK` customers so
the arrays stay in the CPU cache; every step inside a chunk is a numpy operation.
"""

from __future__ import annotations

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
        self.policy = policy or TopScoringHits(grid.thresholds)
        self.rules = RuleTags(grid)
        self.thresholds = np.asarray(grid.thresholds, dtype=np.float32)
        self.model_tags = [i for i, t in enumerate(grid.tags.values()) if t.kind == "propensity"]

    @classmethod
    def load(cls, settings: Settings, *, model_path: Path | None = None) -> Engine:
        """The grid from ``personas/`` and the saved model (default: the state folder's)."""
        grid = load_grid(settings.personas_dir / "grid.yaml")
        return cls(grid, prop.load(model_path or settings.resolved_model_path, grid))

    def score_tags(self, batch: Batch) -> TagScores:
        """Tag scores, hits and inference flags for a whole batch (chunked)."""
        n, t = len(batch), len(self.grid.tags)
        scores = np.zeros((n, t), dtype=np.float32)
        missing = np.zeros((n, t), dtype=np.bool_)
        for start in range(0, n, CHUNK):
            part = batch.take(slice(start, start + CHUNK)) if n > CHUNK else batch
            s, m = self._score_chunk(part)
            scores[start : start + len(part)] = s
            missing[start : start + len(part)] = m
        return TagScores(scores=scores, hits=scores >= self.thresholds, inferred=missing)

    def score(self, batch: Batch) -> ScoreResult:
        """Tags and profiles for a batch."""
        tags = self.score_tags(batch)
        assignment = self.assign(tags)
        return ScoreResult(engine=self, batch=batch, tags=tags, assignment=assignment)

    def assign(self, tags: TagScores) -> Assignment:
        parts = [
            self.profiles.assign(tags.scores[s : s + CHUNK], tags.hits[s : s + CHUNK], self.policy)
            for s in range(0, max(len(tags.scores), 1), CHUNK)
        ]
        if len(parts) == 1:
            return parts[0]
        return Assignment(
            profile_index=np.concatenate([p.profile_index for p in parts]),
            chosen=np.concatenate([p.chosen for p in parts]),
            substituted=np.concatenate([p.substituted for p in parts]),
            policy=self.policy.name,
        )

    def _score_chunk(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        n, t = len(batch), len(self.grid.tags)
        scores = np.zeros((n, t), dtype=np.float32)
        missing = np.zeros((n, t), dtype=np.bool_)
        self.rules.score_into(batch, scores, missing)
        if self.model_tags and self.model is None:
            raise ScorerNotFitted(
                "the propensity tag needs a fitted model; run `scripts-engine train`"
            )
        model = self.model
        if model is None:
            return scores, missing
        for j in self.model_tags:
            name = self.grid.tag_names[j]
            feats = model.features[name]
            X = prop.design_matrix(batch, feats)
            scores[:, j] = model.propensity[name].predict_proba(X)[:, 1]
            # the boosted trees route missing values down learned branches: inferred, and said so
            missing[:, j] = np.isnan(X).any(axis=1)
        for j in self.rules.index:
            rows = np.flatnonzero(missing[:, j])
            if rows.size:
                name = self.grid.tag_names[j]
                inf = model.inference[name]
                X = prop.design_matrix(batch.take(rows), inf.features)
                scores[rows, j] = np.clip(inf.estimator.predict(X), 0.0, 1.0)
        return scores, missing

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
        hit_order = sorted((int(j) for j in np.flatnonzero(hits)), key=lambda j: (-float(scores[j]), j))
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
