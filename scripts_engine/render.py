"""Rendering: customer + profile + channel + moment + style -> a :class:`Script`.

The renderer loads the template pack, ``styles.yaml`` and ``compliance.yaml`` once, checks
every ``reload_interval`` seconds whether a file changed (mtime and size) and reloads then.
For each script it builds one context (:mod:`scripts_engine.context`, the documented
contract), renders the stages in the sandbox under a work budget
(:mod:`scripts_engine.assembly`), runs the content rules on the result and refuses the script
if any rule is broken. It needs no scoring internals: the caller passes the profile and the
customer's per-tag scores, which decide the order of the five value blocks and which of them
the customer really hits (:mod:`scripts_engine.composition`).

Customers who opted out of profiling (``profiling_opt_out``), or ``generic=True`` (the
control group), get the generic script: no profile, a neutral style, the default offer.

The parts: :mod:`~scripts_engine.customer_view` (what a template may know of the customer),
:mod:`~scripts_engine.moments` (why now), :mod:`~scripts_engine.composition` (value blocks),
:mod:`~scripts_engine.assembly` (segments and memoisation),
:mod:`~scripts_engine.distinctness` (how different the profiles' scripts are).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from scripts_engine.assembly import SegmentAssembly
from scripts_engine.compliance import load_rules
from scripts_engine.composition import hit_tags, order_tags, profile_info, value_blocks
from scripts_engine.context import CHANNELS, AgentInfo, CallInfo, OfferInfo
from scripts_engine.customer_view import clean, customer_info
from scripts_engine.distinctness import Distinctness, measure
from scripts_engine.errors import ScriptComplianceError, ScriptRenderError, TemplateLimitExceeded
from scripts_engine.grid import Grid, load_grid
from scripts_engine.moments import resolve_moment
from scripts_engine.profiles import Profile, ProfileCatalog
from scripts_engine.sandbox import Limits, ScriptSandbox, safe_range, start_budget
from scripts_engine.script import Script, rendered_script_id
from scripts_engine.styles import load_styles
from scripts_engine.templates import PackSource, TemplatePack, signature

__all__ = ["Distinctness", "Renderer", "distinctness"]

_T = TypeVar("_T")


class _Decided(NamedTuple):
    """What the context builder decided for one script, beside the variables."""

    tags: tuple[str, ...]
    hits: tuple[bool, ...]
    pid: str | None
    lead: str | None
    close: str


class Renderer(SegmentAssembly):
    """Renders scripts from one personas folder; thread-compatible, reloads on change."""

    def __init__(
        self,
        personas_dir: Path,
        *,
        grid: Grid | None = None,
        limits: Limits | None = None,
        reload_interval: float = 2.0,
        memoize: bool = True,
        memo_size: int = 50_000,
        source: PackSource | None = None,
    ):
        self.personas_dir = Path(personas_dir)
        #: where templates and styles come from: the files (None) or, e.g., the live versions
        self.source = source
        self.grid = grid or load_grid(self.personas_dir / "grid.yaml")
        self.profiles = ProfileCatalog(self.grid)
        self.env = ScriptSandbox(limits)
        self.limits = self.env.limits
        self.reload_interval = reload_interval
        #: memoise segment text on the context values a template reads (see templates.py)
        self.memoize = memoize
        self.memo_size = memo_size
        self._memo: dict[tuple[Any, ...], str] = {}
        self._checked = 0.0
        self._load()

    # -- loading ----------------------------------------------------------------------------
    def _watched(self) -> tuple[Path, ...]:
        d = self.personas_dir
        return (d / "templates", d / "styles.yaml", d / "compliance.yaml")

    def _signature(self) -> Any:
        if self.source is None:
            return signature(*self._watched())
        return (self.source.signature(), signature(self.personas_dir / "compliance.yaml"))

    def _load(self) -> None:
        sig = self._signature()
        styles_version: str | None
        if self.source is None:
            pack = TemplatePack.load(self.personas_dir / "templates", self.env)
            styles = load_styles(self.personas_dir / "styles.yaml")
            data = (self.personas_dir / "styles.yaml").read_bytes()
            styles_version = hashlib.sha256(data).hexdigest()[:16]
        else:
            pack, styles = self.source.load(self.env)
            styles_version = self.source.styles_version(styles)
        rules = load_rules(self.personas_dir / "compliance.yaml")
        self.pack, self.styles, self.rules, self._sig = pack, styles, rules, sig
        #: content hash of the styles.yaml text in use (what a call record names)
        self.styles_version = styles_version
        self._memo = {}
        self._ctx_cache: dict[Any, Any] = {}
        #: the context parts that depend on the loaded files only
        self._fixed = {
            "bank": rules.bank.model_dump(),
            "agent": AgentInfo(name=styles.agent.name, ai_label=styles.agent.ai_label).model_dump(),
        }
        self._plans: dict[Any, Any] = {}
        self._checked = time.monotonic()

    def refresh_due(self) -> bool:
        """Whether the next :meth:`refresh` would look at the files (or the live set)."""
        return time.monotonic() - self._checked >= self.reload_interval

    def refresh(self, *, force: bool = False) -> bool:
        """Reload if a watched file changed (checked at most every ``reload_interval`` s)."""
        now = time.monotonic()
        if not force and now - self._checked < self.reload_interval:
            return False
        self._checked = now
        if self._signature() == self._sig:
            return False
        self._load()
        return True

    # -- context ----------------------------------------------------------------------------
    def ordered_tags(self, profile: Profile, tag_scores: Mapping[str, float] | None) -> list[str]:
        """The profile's tags in speaking order: hits first, then by score (see composition)."""
        return list(order_tags(self.grid, profile.tags, tag_scores)[0])

    def _cached(self, key: tuple[Any, ...], factory: Callable[[], _T]) -> _T:
        value: _T | None = self._ctx_cache.get(key)
        if value is None:
            value = self._keep(key, factory())
        return value

    def _keep(self, key: tuple[Any, ...], value: _T) -> _T:
        """Store a built context part (the cache is emptied when it is full)."""
        if len(self._ctx_cache) >= self.memo_size:
            self._ctx_cache.clear()
        self._ctx_cache[key] = value
        return value

    def build_context(
        self,
        customer: Mapping[str, Any],
        profile: Profile | str | None,
        tag_scores: Mapping[str, float] | None = None,
        *,
        channel: str = "call",
        moment: str = "none",
        style: str | None = None,
        as_of: date | None = None,
        generic: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The context every stage of one script gets, and what was decided on the way.

        Returns ``(variables, meta)``: ``variables`` validates against
        :class:`~scripts_engine.context.CommonContext` (generic) or ``PersonaContext``
        (persona); ``meta`` holds ``tags`` (speaking order), ``hits`` (per tag, whether the
        customer hits it), ``profile`` (id or None), ``lead`` and ``close``. Parts that
        depend only on configuration and a few inputs are built once, then reused.
        """
        base, d = self._context(
            customer, profile, tag_scores, channel, moment, style, as_of, generic
        )
        meta = {"tags": list(d.tags), "hits": list(d.hits), "profile": d.pid, "lead": d.lead,
                "close": d.close}  # fmt: skip
        return base, meta

    def _context(
        self,
        customer: Mapping[str, Any],
        profile: Profile | str | None,
        tag_scores: Mapping[str, float] | None,
        channel: str,
        moment: str,
        style: str | None,
        as_of: date | None,
        generic: bool,
    ) -> tuple[dict[str, Any], _Decided]:
        """:meth:`build_context`'s variables, and the decisions as one record."""
        if channel not in CHANNELS:
            raise ScriptRenderError(
                f"unknown channel '{channel}'; use one of {', '.join(CHANNELS)}"
            )
        if isinstance(profile, str):
            profile = self.profiles.get(profile)
        as_of = as_of or date.today()
        persona = profile is not None and not generic and not customer.get("profiling_opt_out")
        tags: tuple[str, ...] = ()
        hits: tuple[bool, ...] = ()
        pid = lead = None
        if persona and profile is not None:
            tags, hits = order_tags(self.grid, profile.tags, tag_scores)
            pid, lead = profile.id, tags[0]
        cust = customer_info(customer)
        cache, styles, rules = self._ctx_cache, self.styles, self.rules
        iso = as_of.isoformat()
        # the close depends on the set of tags and the lead only, not on the whole order
        key: tuple[Any, ...] = ("call", channel, pid, lead, iso)
        call = cache.get(key)
        if call is None:
            close = styles.choose_close(tags)
            call_d = CallInfo(channel=channel, persona=persona, close=close, as_of=iso)
            call = self._keep(key, (close, call_d.model_dump()))
        close = call[0]
        # only the customer's hits that can bar an offer matter (the same for most customers)
        risk = customer.get("risk_rating")
        barring: tuple[str, ...] | None = None
        if persona:
            hit = hit_tags(self.grid, tag_scores) & rules.offer_barring_tags
            # as a sorted tuple: the offer's cache keys then hold no set for the GC to walk
            barring = cache.get(("barring", hit))
            if barring is None:
                barring = self._keep(("barring", hit), tuple(sorted(hit)))
        key = ("offer", pid, lead, risk, barring)
        offer = cache.get(key)
        if offer is None:
            kind = rules.choose_offer(tags, risk, barring or ())
            product = rules.products[kind]
            offer_d = OfferInfo(kind=kind, name_zh=product.name_zh, risk_level=product.risk_level)
            offer = self._keep(key, offer_d.model_dump())
        if persona:
            key = ("pick", style, *[customer.get(f) for f in styles.fields_used])
            style_d = cache.get(key)
            if style_d is None:
                picked = styles.pick(customer, style)
                style_d = self._keep(
                    key, self._cached(("style", picked), lambda: styles.info(*picked).model_dump())
                )
        else:
            style_d = self._cached(("style",), lambda: styles.neutral_style().model_dump())
        due, born = cust["maturity_date"], cust["birthday"]
        key = ("moment", moment, iso, due, born, lead)
        moment_d = cache.get(key)
        if moment_d is None:
            moment_d = self._keep(
                key,
                resolve_moment(
                    styles, moment, maturity_date=due, birthday=born, as_of=as_of, lead=lead
                ).model_dump(),
            )
        fixed = self._fixed
        base: dict[str, Any] = {
            "bank": fixed["bank"],
            "agent": fixed["agent"],
            "customer": cust,
            "style": style_d,
            "moment": moment_d,
            "offer": offer,
            "call": call[1],
            "range": safe_range,
        }
        if pid is not None:
            # not cached: one order and hit pattern of many, cheaper to build than to keep
            base["profile"] = profile_info(self.grid, pid, tags, hits)
        return base, _Decided(tags, hits, pid, lead, close)

    # -- rendering --------------------------------------------------------------------------
    def render_script(
        self,
        customer: Mapping[str, Any],
        profile: Profile | str | None,
        tag_scores: Mapping[str, float] | None = None,
        *,
        channel: str = "call",
        moment: str = "none",
        style: str | None = None,
        as_of: date | None = None,
        generic: bool = False,
    ) -> Script:
        """Render one script.

        Args:
            customer: the customer's fields and contact fields (``features`` record).
            profile: the persona profile (or its id); ``None`` renders the generic script.
            tag_scores: the customer's score per tag: orders the five value blocks and says
                which the customer hits (the others get their softer, substituted wording).
            channel: ``call``, ``wechat`` or ``sms``.
            moment: one of ``MOMENTS`` or ``auto`` (chosen from the customer's dates).
            style: explicit ``temperament.interest`` (either part may be empty).
            as_of: the date the script is for (default: today); part of the script's id.
            generic: the non-persona script (control group), whatever the profile.

        Raises:
            ScriptRenderError: bad arguments, a broken template, a limit hit.
            ScriptComplianceError: the rendered text breaks a content rule; every finding
                names the profile, channel, moment, style, stage and template version.
        """
        self.refresh()
        base, d = self._context(
            customer, profile, tag_scores, channel, moment, style, as_of, generic
        )
        tags, hits, pid, close = d.tags, d.hits, d.pid, d.close
        offer_kind, style_id = base["offer"]["kind"], base["style"]["id"]
        moment_kind, as_of_s = base["moment"]["kind"], base["call"]["as_of"]
        # not cached (see the profile in _context)
        blocks = value_blocks(self.grid, tags, hits) if tags and channel == "call" else None
        start_budget(self.limits)
        segments, parts = self._segments(channel, base, tags, hits, pid, close, moment_kind, blocks)
        total = sum([len(s.text) for s in segments])
        if total > self.limits.max_script_chars:
            raise TemplateLimitExceeded(f"the script is longer than {self.limits.max_script_chars}")
        customer_id = clean(customer.get("customer_id"), 64)
        findings = self.rules.check(segments, channel, parts)
        if findings:
            where = {
                "profile": pid or "generic", "channel": channel, "moment": moment_kind,
                "style": style_id, "customer": customer_id or None,
            }  # fmt: skip
            findings = [replace(f, **where) for f in findings]
            raise ScriptComplianceError(
                "the rendered script breaks content rules: " + "; ".join(map(str, findings[:3])),
                findings=tuple(findings),
            )
        sid = rendered_script_id(
            # the customer's context values in contract order, one unit separator apart
            customer="\x1d".join(map(str, base["customer"].values())),
            customer_id=customer_id, profile=pid, tags=",".join(tags),
            hits="".join(["1" if h else "0" for h in hits]), channel=channel,
            moment=moment_kind, style=style_id, offer=offer_kind, close=close,
            as_of=as_of_s, pack=self.pack.version, styles=self.styles_version or "",
        )  # fmt: skip
        return Script(
            id=sid,
            customer_id=customer_id or None,
            profile_id=pid,
            persona=pid is not None,
            channel=channel,
            moment=moment_kind,
            style=style_id,
            offer=offer_kind,
            close=close,
            as_of=as_of_s,
            pack_version=self.pack.version,
            segments=tuple(segments),
            styles_version=self.styles_version,
        )

    # -- evaluation -------------------------------------------------------------------------
    def distinctness(
        self,
        customer: Mapping[str, Any],
        tag_scores: Mapping[str, float] | None,
        *,
        profiles: Iterable[Profile] | None = None,
        **options: Any,
    ) -> Distinctness:
        """Smallest and mean pairwise normalised edit distance of the profiles' value stages."""
        return measure(self, customer, tag_scores, profiles=profiles, **options)


def distinctness(
    renderer: Renderer,
    customer: Mapping[str, Any],
    tag_scores: Mapping[str, float] | None,
    **options: Any,
) -> Distinctness:
    """Module-level shortcut for :meth:`Renderer.distinctness` (for ``evaluate``)."""
    return renderer.distinctness(customer, tag_scores, **options)
