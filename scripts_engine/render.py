"""Rendering: customer + profile + channel + moment + style -> a :class:`Script`.

The renderer loads the template pack, ``styles.yaml`` and ``compliance.yaml`` once, checks
every ``reload_interval`` seconds whether a file changed (mtime and size) and reloads then.
For each script it builds one validated context (:mod:`scripts_engine.context`), renders the
stages in the sandbox under a work budget, runs the content rules on the result and refuses
the script if any rule is broken. It needs no scoring internals: the caller passes the
profile and the customer's per-tag scores (which order the five value blocks).

Customers who opted out of profiling (``profiling_opt_out``), or ``generic=True`` (the
control group), get the generic script: no profile, a neutral style, the default offer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from scripts_engine.compliance import load_rules
from scripts_engine.context import (
    CHANNELS,
    MOMENTS,
    OBJECTIONS,
    WECHAT_MESSAGES,
    AgentInfo,
    CallInfo,
    CustomerInfo,
    MomentInfo,
    OfferInfo,
)
from scripts_engine.errors import ScriptComplianceError, ScriptRenderError, TemplateLimitExceeded
from scripts_engine.filters import honorific_of, mask_phone, surname_of, to_date
from scripts_engine.grid import Grid, load_grid
from scripts_engine.profiles import Profile, ProfileCatalog
from scripts_engine.sandbox import Limits, ScriptSandbox, reset_steps, safe_range, start_budget
from scripts_engine.script import Script, Segment, script_id
from scripts_engine.styles import load_styles
from scripts_engine.templates import PackSource, PackTemplate, TemplatePack, signature

_LINES = re.compile(r"[ \t]*\n[ \t]*")
#: characters a customer value may not carry into a script: controls, template and markup
_DROP = str.maketrans("", "", "".join(map(chr, range(32))) + "\x7f{}<>")
_OBJ_REPR = re.compile(r"<[^<>]*>")


def _clean(value: Any, limit: int = 40) -> str:
    if value is None or value != value:  # None or NaN
        return ""
    return str(value).translate(_DROP).strip()[:limit]


def customer_info(customer: Mapping[str, Any]) -> CustomerInfo:
    """The allowlisted, masked view of a customer record that templates may see."""
    name = _clean(customer.get("name"))
    gender = _clean(customer.get("gender")).upper()
    gender = gender if gender in ("F", "M") else ""
    age = customer.get("age")
    try:
        age_years = int(age) if age is not None and age == age else 0
    except (TypeError, ValueError):
        age_years = 0
    dates = {}
    for key in ("birthday", "maturity_date"):
        try:
            day = to_date(customer.get(key))
        except ValueError:
            day = None
        dates[key] = day.isoformat() if day else ""
    return CustomerInfo(
        honorific=honorific_of(name, gender),
        surname=surname_of(name),
        gender=gender,  # type: ignore[arg-type]
        age=age_years,
        city=_clean(customer.get("city"), 20),
        province=_clean(customer.get("province"), 20),
        phone_masked=mask_phone(customer.get("phone")),
        birthday=dates["birthday"],
        maturity_date=dates["maturity_date"],
    )


def _next_anniversary(day: date, as_of: date) -> date:
    for year in (as_of.year, as_of.year + 1):
        try:
            candidate = day.replace(year=year)
        except ValueError:  # 29 February
            candidate = date(year, 3, 1)
        if candidate >= as_of:
            return candidate
    return as_of


def _values_key(
    head: Any, deps: tuple[tuple[str, ...], ...], variables: dict[str, Any]
) -> tuple[Any, ...] | None:
    """``head`` and the values at ``deps`` in ``variables``; ``None`` when not memoisable.

    Every context path has one fixed type (the context models), so the values alone key the
    memo. A list value (unhashable) or a missing path gives ``None``: the real render then
    runs and raises its clear error.
    """
    key: list[Any] = [head]
    try:
        for path in deps:
            if len(path) == 2:
                key.append(variables[path[0]][path[1]])
            else:
                value = variables[path[0]]
                for part in path[1:]:
                    value = value[part]
                key.append(value)
        out = tuple(key)
        hash(out)
    except (KeyError, TypeError, IndexError):
        return None
    return out


@dataclass(frozen=True)
class Distinctness:
    """How different the value stages of all profiles are for one customer."""

    min_distance: float
    mean_distance: float
    closest: tuple[str, str]
    profiles: int


class Renderer:
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
        if self.source is None:
            pack = TemplatePack.load(self.personas_dir / "templates", self.env)
            styles = load_styles(self.personas_dir / "styles.yaml")
        else:
            pack, styles = self.source.load(self.env)
        rules = load_rules(self.personas_dir / "compliance.yaml")
        self.pack, self.styles, self.rules, self._sig = pack, styles, rules, sig
        self._memo = {}
        self._ctx_cache: dict[Any, Any] = {}
        self._plans: dict[Any, Any] = {}
        self._checked = time.monotonic()

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
        """The profile's tags, highest score first; ties keep the grid order."""
        scores = tag_scores or {}
        return sorted(profile.tags, key=lambda t: -float(scores.get(t, 0.0) or 0.0))

    def _moment(
        self, kind: str, customer: CustomerInfo, as_of: date, lead: str | None
    ) -> MomentInfo:
        auto = self.styles.moments.auto
        if kind == "auto":
            kind = "none"
            mature = to_date(customer.maturity_date)
            born = to_date(customer.birthday)
            holiday = self.styles.next_holiday(as_of)
            if mature and 0 <= (mature - as_of).days <= auto.maturity_within_days:
                kind = "maturity"
            elif (
                born and (_next_anniversary(born, as_of) - as_of).days <= auto.birthday_within_days
            ):
                kind = "birthday"
            elif holiday and (holiday.date - as_of).days <= auto.holiday_within_days:
                kind = "holiday"
        if kind not in MOMENTS:
            raise ScriptRenderError(
                f"unknown moment '{kind}'; use auto or one of {', '.join(MOMENTS)}"
            )
        day: date | None = None
        holiday_zh = event_zh = ""
        if kind == "maturity":
            day = to_date(customer.maturity_date)
        elif kind == "birthday":
            born = to_date(customer.birthday)
            day = _next_anniversary(born, as_of) if born else None
        elif kind == "holiday":
            h = self.styles.next_holiday(as_of)
            day, holiday_zh = (h.date, h.name) if h else (None, "节日")
        elif kind == "event":
            event_zh = self.styles.event_name(lead)
        return MomentInfo(
            kind=kind,
            label_zh=self.styles.moments.labels[kind],
            date=day.isoformat() if day else "",
            days=(day - as_of).days if day else -1,
            holiday_zh=holiday_zh,
            event_zh=event_zh,
        )

    # -- rendering --------------------------------------------------------------------------
    def _render(self, tpl: PackTemplate, variables: dict[str, Any]) -> str:
        key = None
        if tpl.deps is not None and self.memoize:
            key = _values_key(tpl.version, tpl.deps, variables)
        if key is not None:
            hit = self._memo.get(key)
            if hit is not None:
                return hit
        text = self._render_now(tpl, variables)
        if key is not None:
            if len(self._memo) >= self.memo_size:
                self._memo.clear()
            self._memo[key] = text
        return text

    def _render_now(self, tpl: PackTemplate, variables: dict[str, Any]) -> str:
        reset_steps()
        try:
            ctx = tpl.template.new_context(variables, shared=True)
            parts, n, cap = [], 0, self.limits.max_output_chars
            for chunk in tpl.template.root_render_func(ctx):
                n += len(chunk)
                if n > cap:
                    raise TemplateLimitExceeded(f"output is longer than {cap} characters")
                parts.append(chunk)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear error
            raise self._wrap(exc, tpl) from None
        return _LINES.sub("", "".join(parts)).strip()

    def _wrap(self, exc: BaseException, tpl: PackTemplate) -> ScriptRenderError:
        line = None
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(tpl.path):
                line = tpl.template.get_corresponding_lineno(tb.tb_lineno)
            tb = tb.tb_next
        if isinstance(exc, TemplateLimitExceeded):
            return TemplateLimitExceeded(exc.message, template=tpl.name, line=line)
        if isinstance(exc, SecurityError):
            msg = f"refused by the sandbox: {exc}"
        elif isinstance(exc, UndefinedError):
            msg = f"missing variable: {exc}"
        elif isinstance(exc, TemplateError | ScriptRenderError):
            msg = str(exc)
        elif isinstance(exc, RecursionError | MemoryError | OverflowError):
            return TemplateLimitExceeded(f"render bomb stopped ({type(exc).__name__})",
                                         template=tpl.name, line=line)  # fmt: skip
        else:
            msg = f"{type(exc).__name__}: {exc}"
        return ScriptRenderError(_OBJ_REPR.sub("<...>", msg)[:300], template=tpl.name, line=line)

    def _cached(self, key: tuple[Any, ...], factory: Any) -> Any:
        value = self._ctx_cache.get(key)
        if value is None:
            if len(self._ctx_cache) >= self.memo_size:
                self._ctx_cache.clear()
            value = self._ctx_cache[key] = factory()
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
        (persona); ``meta`` holds ``tags`` (score order), ``profile`` (id or None), ``lead``
        and ``close``. Parts that depend only on configuration and a few inputs are built
        and validated once, then reused.
        """
        if channel not in CHANNELS:
            raise ScriptRenderError(
                f"unknown channel '{channel}'; use one of {', '.join(CHANNELS)}"
            )
        if isinstance(profile, str):
            profile = self.profiles.get(profile)
        as_of = as_of or date.today()
        persona = profile is not None and not generic and not customer.get("profiling_opt_out")
        tags = self.ordered_tags(profile, tag_scores) if persona and profile else []
        lead = tags[0] if tags else None
        pid = profile.id if persona and profile else None
        cust = customer_info(customer)
        close = self.styles.choose_close(tags)
        offer_kind = self.rules.choose_offer(tags, customer.get("risk_rating"))
        product = self.rules.products[offer_kind]
        styles = self.styles
        if persona:
            pick_key = ("pick", style, *(customer.get(f) for f in styles.fields_used))
            picked = self._cached(pick_key, lambda: styles.pick(customer, style))
            style_d = self._cached(("style", picked), lambda: styles.info(*picked).model_dump())
        else:
            style_d = self._cached(("style",), lambda: styles.neutral_style().model_dump())
        iso = as_of.isoformat()
        moment_key = ("moment", moment, iso, cust.maturity_date, cust.birthday, lead)
        base: dict[str, Any] = {
            "bank": self._cached(("bank",), lambda: self.rules.bank.model_dump()),
            "agent": self._cached(
                ("agent",),
                lambda: AgentInfo(
                    name=styles.agent.name, ai_label=styles.agent.ai_label
                ).model_dump(),
            ),
            "customer": cust.model_dump(),
            "style": style_d,
            "moment": self._cached(
                moment_key, lambda: self._moment(moment, cust, as_of, lead).model_dump()
            ),
            "offer": self._cached(
                ("offer", offer_kind),
                lambda: OfferInfo(
                    kind=offer_kind, name_zh=product.name_zh, risk_level=product.risk_level
                ).model_dump(),
            ),
            "call": self._cached(
                ("call", channel, persona, close, iso),
                lambda: CallInfo(
                    channel=channel, persona=persona, close=close, as_of=iso
                ).model_dump(),
            ),
            "range": safe_range,
        }
        if persona:
            base["profile"] = self._cached(
                ("profile", pid, *tags), lambda: self._profile(pid, tags)
            )
        return base, {"tags": tags, "profile": pid, "lead": lead, "close": close}

    # The two builders below make plain dicts without pydantic: they are pure functions of the
    # grid and the tag order, hot (one per distinct order), and tests validate their output
    # against ProfileInfo / BlockInfo.
    def _profile(self, pid: str | None, tags: list[str]) -> dict[str, Any]:
        labels = [self.grid.tags[t].label_zh for t in tags]
        return {
            "id": pid or "", "name_zh": "·".join(labels), "tags": list(tags),
            "labels_zh": labels, "lead": tags[0], "lead_zh": labels[0],
        }  # fmt: skip

    def _blocks(self, tags: list[str]) -> list[dict[str, Any]]:
        n = len(tags)
        return [
            {
                "tag": tag, "label_zh": self.grid.tags[tag].label_zh, "rank": i + 1,
                "is_lead": i == 0, "is_last": i == n - 1, "prev": tags[i - 1],
                "next": tags[(i + 1) % n], "lead": tags[0],
            }
            for i, tag in enumerate(tags)
        ]  # fmt: skip

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
            tag_scores: the customer's score per tag; orders the five value blocks.
            channel: ``call``, ``wechat`` or ``sms``.
            moment: one of ``MOMENTS`` or ``auto`` (chosen from the customer's dates).
            style: explicit ``temperament.interest`` (either part may be empty).
            as_of: the date the script is for (default: today); part of the script's id.
            generic: the non-persona script (control group), whatever the profile.

        Raises:
            ScriptRenderError: bad arguments, a broken template, a limit hit.
            ScriptComplianceError: the rendered text breaks a content rule.
        """
        self.refresh()
        base, meta = self.build_context(
            customer, profile, tag_scores, channel=channel, moment=moment, style=style,
            as_of=as_of, generic=generic,
        )  # fmt: skip
        tags, pid, lead, close = meta["tags"], meta["profile"], meta["lead"], meta["close"]
        as_of_s, offer_kind = base["call"]["as_of"], base["offer"]["kind"]
        style_id, moment_kind = base["style"]["id"], base["moment"]["kind"]
        start_budget(self.limits)
        segments = self._segments(channel, base, tags, pid, lead, close, moment_kind)
        total = sum(len(s.text) for s in segments)
        if total > self.limits.max_script_chars:
            raise TemplateLimitExceeded(f"the script is longer than {self.limits.max_script_chars}")
        findings = self.rules.check(segments, channel)
        if findings:
            raise ScriptComplianceError(
                "the rendered script breaks content rules: " + "; ".join(map(str, findings[:3])),
                findings=tuple(findings),
            )
        inputs = {
            "customer": base["customer"], "customer_id": _clean(customer.get("customer_id"), 64),
            "profile": pid, "tags": tags, "channel": channel, "moment": moment_kind,
            "style": style_id, "offer": offer_kind, "close": close,
            "as_of": as_of_s, "pack": self.pack.version,
        }  # fmt: skip
        return Script(
            id=script_id(inputs),
            customer_id=inputs["customer_id"] or None,
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
        )

    def _segments(
        self, channel: str, base: dict[str, Any], tags: list[str], pid: str | None,
        lead: str | None, close: str, moment: str,
    ) -> list[Segment]:  # fmt: skip
        """Render the script's segments, in groups that share their variables."""
        if channel == "sms":
            return list(self._group((("sms", "sms", "chat/sms"),), base, pid, lead))
        if channel == "wechat":
            items = tuple(("wechat", n, f"chat/wechat/{n}") for n in WECHAT_MESSAGES)
            return list(self._group(items, base, pid, lead))
        out = list(
            self._group(
                (
                    ("opening", "opening", "call/opening"),
                    ("moment", moment, f"call/moment/{moment}"),
                ),
                base,
                pid,
                lead,
            )  # fmt: skip
        )
        if tags:
            blocks = self._cached(("blocks", *tags), lambda: self._blocks(tags))
            items = tuple(("value", t, f"call/value/{t}") for t in tags)
            out += self._group(items, base, pid, lead, blocks)
        else:
            out += self._group((("value", "generic", "call/value"),), base, pid, lead)
        rest = (
            ("disclosure", "disclosure", "call/disclosure"),
            ("close", close, f"call/close/{close}"),
            ("signoff", "signoff", "call/signoff"),
            *(("objection", o, f"call/objection/{o}") for o in OBJECTIONS),
        )
        out += self._group(rest, base, pid, lead)
        return out

    def _group(
        self,
        items: tuple[tuple[str, str, str], ...],
        base: dict[str, Any],
        pid: str | None,
        lead: str | None,
        blocks: list[dict[str, Any]] | None = None,
    ) -> tuple[Segment, ...]:
        """Render templates that see the same variables (plus one ``block`` each, for value).

        The group's output is memoised on the values its templates read; ``block`` values
        are a function of the tag order, which is part of the key.
        """
        sig = (tuple(i[2] for i in items), pid, lead)
        plan = self._plans.get(sig)
        if plan is None:
            tpls = tuple(self.pack.resolve(i[2], profile_id=pid, lead=lead) for i in items)
            deps: tuple[tuple[str, ...], ...] | None = None
            if all(t.deps is not None for t in tpls):
                deps = tuple(sorted({p for t in tpls for p in (t.deps or ()) if p[0] != "block"}))
            plan = self._plans[sig] = (tpls, deps, tuple(t.version for t in tpls))
        tpls, deps, versions = plan
        key = None
        if deps is not None and self.memoize:
            # block values are a function of the tag order, which sig's paths carry
            key = _values_key((versions, sig[0]), deps, base)
            if key is not None:
                hit = self._memo.get(key)
                if hit is not None:
                    return hit  # type: ignore[return-value]
        out = []
        for n, ((stage, name, _), tpl) in enumerate(zip(items, tpls, strict=True)):
            variables = base if blocks is None else {**base, "block": blocks[n]}
            text = self._render(tpl, variables)
            if text:
                out.append(Segment(stage, name, text, tpl.name, tpl.version))
        result = tuple(out)
        if key is not None:
            self._memo[key] = result  # type: ignore[assignment]
        return result

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
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cdist

        chosen = list(profiles or self.profiles)
        texts = [
            self.render_script(customer, p, tag_scores, channel="call", **options).stage_text(
                "value"
            )
            for p in chosen
        ]
        matrix = cdist(texts, texts, scorer=Levenshtein.normalized_distance, workers=1)
        n = len(texts)
        best, pair, total = 2.0, ("", ""), 0.0
        for i in range(n):
            for j in range(i + 1, n):
                d = float(matrix[i, j])
                total += d
                if d < best:
                    best, pair = d, (chosen[i].id, chosen[j].id)
        pairs = n * (n - 1) // 2
        return Distinctness(best if pairs else 0.0, total / pairs if pairs else 0.0, pair, n)


def distinctness(
    renderer: Renderer,
    customer: Mapping[str, Any],
    tag_scores: Mapping[str, float] | None,
    **options: Any,
) -> Distinctness:  # noqa: E501
    """Module-level shortcut for :meth:`Renderer.distinctness` (for ``evaluate``)."""
    return renderer.distinctness(customer, tag_scores, **options)
