"""QA review: the queue, the scorecard, calibration (COMPLIANCE.md section 6).

The queue of a campaign mixes a **stratified random sample** with **must-review** calls:

- sample: within each stratum (profile, template-pack version) of the campaign's calls, a
  share ``rate`` (default 2 %) is drawn. Calls are ordered by a keyed hash of their id and
  the first ``floor(rate * n)`` are taken, plus one more with probability equal to the
  fraction left (drawn from the stratum's own hash), so small strata are sampled too while
  the expected share stays ``rate``. The same campaign gives the same sample every time.
- must-review: opt-outs and complaints, the first ``new_version_renders`` calls that used a
  template version written through the API (not a ``system`` seed), wealth-product offers,
  customers aged 60 or over.

A complaint is what the dialler reports: ``complaint: true`` on the outcome. As a fallback for
diallers that do not send the field yet, an outcome whose free-text notes contain a complaint
word (:data:`COMPLAINT_WORDS`) is queued for the same reason. That is a keyword match, not a
classification: it misses complaints worded otherwise and may queue a call that only mentions
the word; a false positive costs one review. Reports count only the field.

Building the queue again adds what became due since (new outcomes) and never duplicates a call.

A review shows the script, audio, tags and reason, the outcome, and every template version the
call used (with its author), ``styles.yaml`` included. The scorecard has **critical**
compliance items (pass, fail or n/a; any fail fails the review, and the reviewer names the
template(s) at fault, or ``styles.yaml`` when the failing words came from a style line, whose
versions are flagged) and **weighted quality** items scored 1-5. A reviewer may not review a
call made with a template version they wrote. **Calibration** sends the same calls to two or
more named reviewers, blind (nobody sees another's scorecard until all have scored), and
reports the spread.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Text, cast, insert, select
from sqlalchemy.orm import Session

from scripts_engine.db.errors import Conflict, Forbidden, NotFound
from scripts_engine.db.models import (
    Call,
    CallDocument,
    Outcome,
    ReviewItem,
    ReviewResult,
    TemplateVersion,
)
from scripts_engine.db.session import Database, write_transaction
from scripts_engine.errors import ScriptsEngineError
from scripts_engine.versions import STYLES, SYSTEM, Actor, VersionStore, find_versions

QUEUE = "queue"
#: critical compliance items: pass | fail | na; any fail fails the review
CRITICAL: dict[str, str] = {
    "opening_disclosure": "CR-13: the opening names the bank and the purpose, says the voice "
    "is AI-generated and how to opt out, before any pitch",
    "risk_disclosure": "CR-11/12: wealth offers carry the full risk disclosure; deposits the "
    "deposit-insurance note",
    "no_banned_claims": "CR-10: no guaranteed returns, deposit blurring, regulator "
    "endorsement or incentives",
    "opt_out_honoured": "CR-14: a refusal ends the pitch and the opt-out is confirmed",
    "audio_ai_label": "CR-20: the audio says it is AI-synthesised before the content",
    "no_personal_data": "CR-15: no raw ID, card or phone numbers or balances are spoken",
}
#: weighted quality items, each scored 1 (poor) to 5 (excellent)
QUALITY: dict[str, float] = {
    "clarity": 0.3, "persona_fit": 0.3, "dialect_naturalness": 0.2, "pacing": 0.2,
}  # fmt: skip
QUALITY_HELP = {
    "clarity": "easy to follow on the phone: short sentences, one idea each",
    "persona_fit": "speaks to this customer's profile and style, not generic",
    "dialect_naturalness": "the voice and wording sound natural in the customer's dialect",
    "pacing": "pauses and speed suit a phone call",
}
REASONS = ("sample", "opt_out", "complaint", "new_version", "wealth", "age_60")
#: words in a dialler's outcome notes that queue a call as a complaint when the dialler did
#: not set ``complaint`` (a fallback; see the module docstring)
COMPLAINT_WORDS = ("投诉", "起诉", "监管", "举报", "complain")
WEALTH_OFFERS = frozenset({"wealth", "insurance"})


class InvalidScorecard(ScriptsEngineError, ValueError):
    """The scorecard is incomplete or names templates the call did not use."""

    def __init__(self, message: str, *, field: str):
        self.field = field
        super().__init__(message)


def _unit(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def stratified_sample(strata: Mapping[Any, Sequence[str]], rate: float, *, seed: str) -> set[str]:
    """Call ids drawn from each stratum (see the module docstring); deterministic in ``seed``."""
    chosen: set[str] = set()
    for key, ids in strata.items():
        want = rate * len(ids)
        k = math.floor(want)
        if _unit(seed, "stratum", repr(key)) < want - k:
            k += 1
        ordered = sorted(ids, key=lambda cid: _unit(seed, cid))
        chosen.update(ordered[:k])
    return chosen


def _templates(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The versions a call's script used: its segments' templates, then ``styles.yaml`` (the
    style lines: tone, hook, thanks; recorded since migration 0005), so a defect caused by a
    style line is traced and flagged like a template's."""
    seen: dict[tuple[str, str], None] = {}
    for t in record.get("templates") or []:
        seen[(str(t.get("template")), str(t.get("version")))] = None
    if record.get("styles_version"):
        seen[(STYLES, str(record["styles_version"]))] = None
    return [{"template": n, "version": v} for n, v in seen]


def _is_complaint(complaint: bool, notes: str | None) -> bool:
    """The dialler reported a complaint, or (fallback) its notes use a complaint word."""
    return bool(complaint) or any(w in (notes or "").lower() for w in COMPLAINT_WORDS)


#: calls read per round trip while scanning a campaign, and review items written per statement
PAGE = 2000


def _scan(session: Session, campaign_id: str) -> Any:
    """The campaign's calls in build order, with only what the queue needs of each record
    (extracted by the database: the context snapshot and scores are never loaded), streamed
    ``PAGE`` rows at a time."""
    rec = CallDocument.record
    stmt = (
        select(Call.id, Call.profile_id, rec["pack_version"].as_string(),
               rec[("context", "offer", "kind")].as_string(),
               rec[("context", "customer", "age")].as_string(),
               rec["templates"], rec["styles_version"].as_string())
        .join_from(Call, CallDocument)
        .where(Call.campaign_id == campaign_id)
        .order_by(Call.created_at, Call.id)
        .execution_options(yield_per=PAGE)
    )  # fmt: skip
    return session.execute(stmt)


def _age(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def build_queue(
    *, db: Database, campaign_id: str, rate: float, new_version_renders: int, actor: Actor,
    now: datetime,
) -> dict[str, Any]:  # fmt: skip
    """Add the campaign's sample and must-review calls to the queue; returns counts.

    Memory is bounded by the number of calls (their ids, per stratum) and of queued calls,
    not by the size of the records: the calls are read in pages with the few record fields
    the rules read, and the new review items are written in batches.

    Raises:
        NotFound: no such campaign or it has no calls.
    """
    with db.read() as session:
        existing = {cid: (list(why), status) for cid, why, status in session.execute(
            select(ReviewItem.call_id, ReviewItem.reasons, ReviewItem.status).where(
                ReviewItem.batch == QUEUE, ReviewItem.campaign_id == campaign_id))}  # fmt: skip
        seen_new: dict[tuple[str, str], int] = defaultdict(int)
        for templates, why in session.execute(
            select(ReviewItem.templates, ReviewItem.reasons).where(
                ReviewItem.batch == QUEUE, ReviewItem.campaign_id == campaign_id,
                cast(ReviewItem.reasons, Text).contains('"new_version"'))
        ):  # fmt: skip
            if "new_version" in why:
                for t in templates:
                    seen_new[(t["template"], t["version"])] += 1
        flagged = session.execute(
            select(Outcome.call_id, Outcome.opt_out, Outcome.complaint, Outcome.notes).where(
                Outcome.campaign_id == campaign_id,
                Outcome.opt_out | Outcome.complaint | Outcome.notes.is_not(None))
        ).all()  # fmt: skip
        new_versions = {(n, v) for n, v in session.execute(
            select(TemplateVersion.name, TemplateVersion.version).where(
                TemplateVersion.author != SYSTEM))}  # fmt: skip
        strata: dict[Any, list[str]] = defaultdict(list)
        reasons: dict[str, list[str]] = defaultdict(list)
        calls = 0
        for cid, pid, pack, offer, age, templates, styles in _scan(session, campaign_id):
            calls += 1
            strata[(pid or "generic", pack)].append(cid)
            if offer in WEALTH_OFFERS:
                reasons[cid].append("wealth")
            if _age(age) >= 60:
                reasons[cid].append("age_60")
            if cid in existing or not new_versions:
                continue
            used = _templates({"templates": templates, "styles_version": styles})
            for p in ((t["template"], t["version"]) for t in used):
                if p in new_versions and seen_new[p] < new_version_renders:
                    seen_new[p] += 1
                    if "new_version" not in reasons[cid]:
                        reasons[cid].append("new_version")
    if not calls:
        raise NotFound(f"campaign '{campaign_id}' has no calls (yet)")
    for cid, opt_out, complaint, notes in flagged:
        if opt_out:
            reasons[cid].append("opt_out")
        if _is_complaint(complaint, notes):
            reasons[cid].append("complaint")
    for cid in stratified_sample(strata, rate, seed=campaign_id):
        reasons[cid].insert(0, "sample")
    del strata
    counts: dict[str, int] = defaultdict(int)
    for why in reasons.values():
        for w in why:
            counts[w] += 1
    merged = {cid: list(dict.fromkeys([*existing[cid][0], *why]))
              for cid, why in reasons.items() if why and cid in existing}  # fmt: skip
    updates = {cid: m for cid, m in merged.items()
               if m != existing[cid][0] and existing[cid][1] == "open"}  # fmt: skip
    fresh = [cid for cid, why in reasons.items() if why and cid not in existing]
    added = 0
    for start in range(0, len(fresh), PAGE):
        part = fresh[start : start + PAGE]
        added += write_transaction(db, partial(_add_items, campaign_id=campaign_id,
                                               call_ids=part, reasons=reasons, actor=actor,
                                               now=now))  # fmt: skip
    if updates:

        def update_reasons(session: Session) -> None:
            for item in session.scalars(select(ReviewItem).where(
                    ReviewItem.batch == QUEUE, ReviewItem.call_id.in_(list(updates)))):  # fmt: skip
                if item.status == "open":
                    item.reasons = updates[item.call_id]

        write_transaction(db, update_reasons)
    return {"campaign_id": campaign_id, "calls": calls, "added": added,
            "updated": len(updates), "rate": rate,
            "by_reason": {r: counts.get(r, 0) for r in REASONS}}  # fmt: skip


def _add_items(
    session: Session, *, campaign_id: str, call_ids: Sequence[str],
    reasons: Mapping[str, list[str]], actor: Actor, now: datetime,
) -> int:  # fmt: skip
    """Insert review items for these calls (skipping any another build added meanwhile)."""
    rec = CallDocument.record
    rows = session.execute(
        select(Call.id, Call.profile_id, rec["pack_version"].as_string(), rec["templates"],
               rec["styles_version"].as_string())
        .join_from(Call, CallDocument)
        .where(Call.id.in_(list(call_ids)))
    ).all()  # fmt: skip
    taken = set(session.scalars(select(ReviewItem.call_id).where(
        ReviewItem.batch == QUEUE, ReviewItem.call_id.in_(list(call_ids)))))  # fmt: skip
    used = {cid: _templates({"templates": t, "styles_version": sv})
            for cid, _, _, t, sv in rows}  # fmt: skip
    stored = find_versions(session, {(t["template"], t["version"])
                                     for ts in used.values() for t in ts})  # fmt: skip
    items = [
        {"batch": QUEUE, "call_id": cid, "campaign_id": campaign_id, "profile_id": pid,
         "pack_version": pack, "templates": used[cid],
         "authors": sorted({stored[(t["template"], t["version"])].author for t in used[cid]
                            if (t["template"], t["version"]) in stored}),
         "reasons": reasons[cid], "assignees": [], "status": "open",
         "created_by": actor.name, "created_at": now}
        for cid, pid, pack, _, _ in rows if cid not in taken
    ]  # fmt: skip
    if items:
        session.execute(insert(ReviewItem), items)
    return len(items)


# --- reading the queue --------------------------------------------------------------------------


def may_review(item: ReviewItem, reviewer: str) -> bool:
    """Segregation of duties, and calibration assignments."""
    if reviewer in item.authors:
        return False
    return not item.assignees or reviewer in item.assignees


def list_items(
    session: Session, *, reviewer: str, campaign_id: str | None = None, status: str | None = None,
    reason: str | None = None, batch: str | None = None, mine: bool = True, limit: int = 100,
    before: int | None = None,
) -> list[tuple[ReviewItem, bool]]:  # fmt: skip
    """Review items, newest first, with whether ``reviewer`` has scored each. With ``mine``,
    only the items this reviewer may review. ``before``: only items with a smaller id (the
    cursor for the next page: the last id of this one).

    Items are read ``limit``-sized pages at a time and filtered until ``limit`` are found, so
    a large queue is never loaded at once."""
    stmt = select(ReviewItem).order_by(ReviewItem.id.desc())
    if campaign_id:
        stmt = stmt.where(ReviewItem.campaign_id == campaign_id)
    if status:
        stmt = stmt.where(ReviewItem.status == status)
    if batch:
        stmt = stmt.where(ReviewItem.batch == batch)
    if reason:  # a cheap pre-filter on the JSON text; the exact test is below
        stmt = stmt.where(cast(ReviewItem.reasons, Text).contains(f'"{reason}"', autoescape=True))
    page = limit
    items: list[ReviewItem] = []
    while len(items) < limit:
        where = stmt if before is None else stmt.where(ReviewItem.id < before)
        rows = list(session.scalars(where.limit(page)))
        items += [i for i in rows if (not reason or reason in i.reasons)
                  and (not mine or may_review(i, reviewer))]  # fmt: skip
        if len(rows) < page:
            break
        before = rows[-1].id
    items = items[:limit]
    done = set(session.scalars(select(ReviewResult.item_id).where(
        ReviewResult.reviewer == reviewer, ReviewResult.item_id.in_([i.id for i in items]))))  # fmt: skip
    return [(i, i.id in done) for i in items]


def get_item(session: Session, item_id: int) -> ReviewItem:
    item = session.get(ReviewItem, item_id)
    if item is None:
        raise NotFound(f"no review {item_id}")
    return item


def results_of(session: Session, item_id: int) -> list[ReviewResult]:
    stmt = select(ReviewResult).where(ReviewResult.item_id == item_id)
    return list(session.scalars(stmt.order_by(ReviewResult.id)))


def visible_results(
    item: ReviewItem, results: list[ReviewResult], viewer: Actor
) -> list[ReviewResult]:
    """Blind calibration: until every assignee has scored, a reviewer sees only their own."""
    if not item.assignees or item.status == "done":
        return results
    return [r for r in results if r.reviewer == viewer.name]


# --- scoring --------------------------------------------------------------------------------


def quality_score(quality: Mapping[str, int]) -> float:
    """Weighted quality on 0-100 (1 -> 0, 5 -> 100 per item)."""
    total = sum(QUALITY.values())
    return round(100 * sum(w * (int(quality[k]) - 1) / 4 for k, w in QUALITY.items()) / total, 2)


def submit_scorecard(
    *, db: Database, versions: VersionStore, item_id: int, actor: Actor, critical: dict[str, str],
    quality: dict[str, int], defects: list[dict[str, str]], notes: str, now: datetime,
) -> ReviewResult:  # fmt: skip
    """Store one reviewer's scorecard; a failed critical item flags the named versions.

    Raises:
        NotFound: no such review.
        Forbidden: the reviewer wrote a template the call used, or is not assigned.
        Conflict: this reviewer already scored it.
        InvalidScorecard: items missing or unknown, defects not naming the call's templates.
    """
    missing = [k for k in CRITICAL if k not in critical]
    if missing or set(critical) - set(CRITICAL):
        raise InvalidScorecard(f"critical items: give pass, fail or na for each of "
                               f"{', '.join(CRITICAL)}", field="critical")  # fmt: skip
    if set(quality) != set(QUALITY):
        raise InvalidScorecard(f"quality items: score each of {', '.join(QUALITY)} from 1 to 5",
                               field="quality")  # fmt: skip
    failed = [k for k, v in critical.items() if v == "fail"]

    def run(session: Session) -> ReviewResult:
        item = get_item(session, item_id)
        if actor.name in item.authors:
            raise Forbidden("a reviewer cannot review calls made with their own template",
                            code="own_template")  # fmt: skip
        if item.assignees and actor.name not in item.assignees:
            raise Forbidden("this calibration review is assigned to other reviewers",
                            code="not_assigned")  # fmt: skip
        if any(r.reviewer == actor.name for r in results_of(session, item_id)):
            raise Conflict("you already scored this review", code="already_reviewed")
        used = {t["template"]: t["version"] for t in item.templates}
        traced = []
        for i, d in enumerate(defects):
            name = d.get("template", "")
            if name not in used:
                raise InvalidScorecard(f"the call used no template '{name}'",
                                       field=f"defects[{i}].template")  # fmt: skip
            if d.get("item") not in (*CRITICAL, *QUALITY):
                raise InvalidScorecard("name a scorecard item", field=f"defects[{i}].item")
            traced.append({**d, "version": used[name]})
        if failed and not any(d["item"] in failed for d in traced):
            raise InvalidScorecard("a failed critical item needs a defect naming the template "
                                   "that caused it", field="defects")  # fmt: skip
        row = ReviewResult(
            item_id=item.id, reviewer=actor.name, reviewer_key_id=actor.key_id,
            critical=dict(critical), quality={k: int(v) for k, v in quality.items()},
            score=quality_score(quality), passed=not failed, defects=traced, notes=notes,
            created_at=now,
        )  # fmt: skip
        session.add(row)
        session.flush()
        if not item.assignees:
            item.status = "done"
        else:
            scored = {r.reviewer for r in results_of(session, item.id)}
            if set(item.assignees) <= scored:
                item.status = "done"
        if failed:
            pairs = {(d["template"], d["version"]) for d in traced if d["item"] in failed}
            versions.flag(session, pairs, actor=actor, now=now, review_id=item.id)
        return row

    return write_transaction(db, run)


# --- calibration ------------------------------------------------------------------------------


def start_calibration(
    *, db: Database, call_ids: Sequence[str], reviewers: Sequence[str], actor: Actor,
    now: datetime,
) -> str:  # fmt: skip
    """Send the same calls to every reviewer, blind; returns the session id.

    Raises:
        NotFound: a call does not exist.
        Forbidden: a reviewer wrote a template one of the calls used.
    """
    batch = "CAL-" + uuid.uuid4().hex[:12]

    def run(session: Session) -> str:
        for cid in dict.fromkeys(call_ids):
            call, doc = session.get(Call, cid), session.get(CallDocument, cid)
            if call is None or doc is None:
                raise NotFound(f"no call '{cid}'")
            templates = _templates(doc.record)
            stored = find_versions(session, [(t["template"], t["version"]) for t in templates])
            authors = sorted({v.author for v in stored.values()})
            clash = sorted(set(reviewers) & set(authors))
            if clash:
                raise Forbidden(f"{', '.join(clash)} wrote a template call {cid} used",
                                code="own_template")  # fmt: skip
            session.add(ReviewItem(
                batch=batch, call_id=cid, campaign_id=call.campaign_id,
                profile_id=call.profile_id, pack_version=doc.record.get("pack_version"),
                templates=templates, authors=authors, reasons=["calibration"],
                assignees=list(dict.fromkeys(reviewers)), status="open", created_by=actor.name,
                created_at=now,
            ))  # fmt: skip
        session.flush()
        return batch

    return write_transaction(db, run)


def calibration_report(session: Session, batch: str, *, reveal: bool) -> dict[str, Any]:
    """Spread between reviewers per call and overall; scores shown only when ``reveal``
    (everyone has scored, or an admin asks)."""
    items = list(session.scalars(select(ReviewItem).where(ReviewItem.batch == batch)
                                 .order_by(ReviewItem.id)))  # fmt: skip
    if not items:
        raise NotFound(f"no calibration session '{batch}'")
    out_items, ranges, agreements = [], [], []
    item_sd: dict[str, list[float]] = defaultdict(list)
    for item in items:
        results = results_of(session, item.id)
        scores = [r.score for r in results]
        entry: dict[str, Any] = {"review_id": item.id, "call_id": item.call_id,
                                 "assignees": item.assignees, "scored": len(results),
                                 "status": item.status}  # fmt: skip
        if len(results) >= 2:
            spread = max(scores) - min(scores)
            ranges.append(spread)
            verdicts = [r.passed for r in results]
            agree = max(verdicts.count(True), verdicts.count(False)) / len(verdicts)
            agreements.append(agree)
            per_item = {k: round(statistics.pstdev([r.quality[k] for r in results]), 3)
                        for k in QUALITY}  # fmt: skip
            for k, v in per_item.items():
                item_sd[k].append(v)
            entry.update(score_range=round(spread, 2),
                         score_sd=round(statistics.pstdev(scores), 2),
                         verdict_agreement=round(agree, 3), quality_sd=per_item)  # fmt: skip
        if reveal:
            entry["results"] = [{"reviewer": r.reviewer, "score": r.score, "passed": r.passed,
                                 "critical": r.critical, "quality": r.quality} for r in results]  # fmt: skip
        out_items.append(entry)
    done = all(i.status == "done" for i in items)
    return {
        "id": batch, "complete": done, "items": out_items,
        "mean_score_range": round(statistics.fmean(ranges), 2) if ranges else None,
        "verdict_agreement": round(statistics.fmean(agreements), 3) if agreements else None,
        "quality_sd": {k: round(statistics.fmean(v), 3) for k, v in item_sd.items()},
    }  # fmt: skip
