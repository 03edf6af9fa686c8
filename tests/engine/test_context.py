"""The template context is a documented contract, and the README is generated from it."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from scripts_engine.composition import value_blocks
from scripts_engine.config import ROOT
from scripts_engine.context import (
    CommonContext,
    PersonaContext,
    ValueBlockContext,
    model_for,
    readme_with_reference,
)
from scripts_engine.lint import SAMPLE_CUSTOMERS, SAMPLE_DATE, SAMPLE_SCORES
from scripts_engine.render import Renderer

MODELS = [CommonContext, PersonaContext, ValueBlockContext]


def _all_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    out = [model]
    for info in model.model_fields.values():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _all_models(sub)
    return out


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_field_is_documented(model: type[BaseModel]) -> None:
    for m in _all_models(model):
        assert (m.__doc__ or "").strip(), f"{m.__name__} has no docstring"
        for name, info in m.model_fields.items():
            assert info.description, f"{m.__name__}.{name} has no description"


def test_readme_matches_the_contract() -> None:
    readme = (ROOT / "personas" / "README.md").read_text(encoding="utf-8")
    assert readme == readme_with_reference(readme), (
        "personas/README.md is out of date: run readme_with_reference() over it"
    )


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(ROOT / "personas", reload_interval=1e9)


@pytest.mark.parametrize("persona", [True, False])
def test_runtime_context_is_exactly_the_contract(renderer: Renderer, persona: bool) -> None:
    for customer, scores in zip(SAMPLE_CUSTOMERS, SAMPLE_SCORES, strict=True):
        base, _ = renderer.build_context(
            customer, "P-ABDEH", scores, generic=not persona, as_of=SAMPLE_DATE
        )
        variables = {k: v for k, v in base.items() if k != "range"}
        model = PersonaContext if persona else CommonContext
        model.model_validate(variables)
        assert set(variables) == set(model.model_fields), (
            "undocumented or missing keys in the template context: update context.py"
        )
        tags = ("silver", "affluent", "debt_free", "warm", "propensity")
        for block in value_blocks(renderer.grid, tags, (True, True, True, False, False)):
            if persona:
                ValueBlockContext.model_validate({**variables, "block": block})


def test_context_values_are_plain_data(renderer: Renderer) -> None:
    base, _ = renderer.build_context(SAMPLE_CUSTOMERS[0], "P-ABDEH", SAMPLE_SCORES[0])

    def plain(v: object) -> bool:
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return isinstance(v, str | int | float | bool)

    assert all(plain(v) for k, v in base.items() if k != "range")


@pytest.mark.parametrize(
    ("template", "model"),
    [
        ("call/opening", CommonContext),
        ("call/value/silver", ValueBlockContext),
        ("chat/sms", PersonaContext),
        ("generic/chat/sms", CommonContext),
        ("tags/silver/call/objection/is_it_safe", PersonaContext),
        ("profiles/P-ABDEH/call/value/affluent", ValueBlockContext),
    ],
)
def test_model_for(template: str, model: type[BaseModel]) -> None:
    assert model_for(template) is model


@pytest.mark.parametrize(
    ("record", "honorific", "surname", "phone"),
    [
        (
            {"name": " 欧阳娜娜 ", "gender": "f", "phone": "13812345678"},
            "欧阳女士",
            "欧阳",
            "138****5678",
        ),
        ({"name": "王伟", "phone": 13812345678}, "王伟", "王", "138****5678"),
        ({"name": "John", "gender": "M", "phone": "+86 138-1234-5678"}, "您", "", "138****5678"),
        # cut to 40 characters, then stripped again; full-width digits are digits
        ({"name": "李" + " " * 39 + "强", "phone": "１３８１２３４"}, "李", "李", "*****３４"),
        ({"name": None, "phone": None}, "您", "", ""),
        ({"name": "张" * 10, "gender": "M", "phone": "12ab34"}, "张先生", "张", "**34"),
    ],
)
def test_customer_view_names_and_masks(
    record: dict[str, object], honorific: str, surname: str, phone: str
) -> None:
    from scripts_engine.customer_view import customer_info
    from scripts_engine.filters import honorific_of, mask_phone

    view = customer_info(record)
    assert (view["honorific"], view["surname"], view["phone_masked"]) == (honorific, surname, phone)
    # the filters templates may use agree with the view
    if record["name"] is None or len(str(record["name"])) <= 40:
        assert honorific_of(record["name"], view["gender"]) == honorific  # type: ignore[arg-type]
    assert mask_phone(record["phone"]) == phone
