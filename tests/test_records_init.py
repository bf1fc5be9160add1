"""`quick_init`: the records' faster __init__ behaves as the one dataclasses writes."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calm_mail import records
from calm_mail.records import quick_init

QUICK = [
    records.User,
    records.Recommendation,
    records.Completion,
    records.PlannedDelivery,
    records.Exclusion,
    records.ComposedMessage,
    records.SendResult,
    records.Event,
]


def twin(cls: type) -> type:
    """The same fields, dataclasses' own __init__ (the reference)."""
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default))
        if f.default is not dataclasses.MISSING
        else (f.name, f.type)
        for f in dataclasses.fields(cls)
    ]
    ns = {"__post_init__": cls.__post_init__} if hasattr(cls, "__post_init__") else {}
    return dataclasses.make_dataclass(
        cls.__name__, fields, namespace=ns, frozen=True, slots=True, kw_only=True
    )


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
def test_the_signature_and_the_defaults_are_the_dataclasses_own(cls: type) -> None:
    assert cls.__init__ is not twin(cls).__init__
    assert str(inspect.signature(cls)) == str(inspect.signature(twin(cls)))


values = st.one_of(st.none(), st.text(max_size=3), st.integers(), st.booleans())
instants = st.sampled_from([datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 27), None])


@pytest.mark.parametrize("cls", QUICK, ids=lambda c: c.__name__)
@given(data=st.data())
def test_any_arguments_give_what_the_dataclass_init_gives(cls: type, data: st.DataObject) -> None:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING and data.draw(st.booleans()):
            continue  # leave it to the default
        kwargs[f.name] = data.draw(instants if "_at" in f.name else values)
    if data.draw(st.booleans()):
        kwargs[data.draw(st.sampled_from(["nope", "user_id"]))] = "x"  # unknown or repeated
    outcomes = []
    for maker in (cls, twin(cls)):
        try:
            made = maker(**kwargs)
        except (TypeError, ValueError) as exc:
            outcomes.append((type(exc), str(exc).split("(")[0][-20:]))
        else:
            outcomes.append(tuple(getattr(made, f.name) for f in dataclasses.fields(cls)))
    assert outcomes[0] == outcomes[1]


def test_a_record_stays_frozen_hashable_and_equal_by_value() -> None:
    a = records.Recommendation(user_id="u", item_ids=("i",))
    b = records.Recommendation(user_id="u", item_ids=("i",))
    assert a == b and hash(a) == hash(b) and a.ahead == 0 and a.scores is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.user_id = "v"  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional argument"):
        records.Recommendation("u", ())  # type: ignore[misc]


def test_only_plain_frozen_slotted_dataclasses_are_taken() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True, kw_only=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Factory:
        a: list[int] = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class NotInit:
        a: int = dataclasses.field(default=0, init=False)

    for cls in (NoSlots, NotFrozen, Factory, NotInit):
        with pytest.raises(TypeError, match="quick_init"):
            quick_init(cls)
