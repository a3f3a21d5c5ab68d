"""Base of every params section: strict types, unknown keys refused, finite numbers, frozen after parsing; shared
field types and the error a cross-key rule raises."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Section(BaseModel):
    """One params section. ``file_optional`` names fields a params file may leave out (they take their typed
    default, and `vidssl params --show` says so); every other field must be written in the file."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    file_optional: ClassVar[frozenset[str]] = frozenset()


class FieldError(ValueError):
    """A rule over several keys of one section, naming the offending ``field`` (dotted, relative to the section),
    so the error points at the key rather than at the section."""

    def __init__(self, field: str, message: str, depends: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.depends = depends  # other fields of the section the rule reads: unwritten ones silence the rule


def _check_jitter(v: list[float]) -> list[float]:
    if len(v) != 4 or min(v) < 0 or v[3] > 0.5:
        raise ValueError(
            f"jitter {v}: give 4 ColorJitter strengths (brightness, contrast, saturation, hue), each >= 0, "
            "hue at most 0.5"
        )
    return v


# ColorJitter strengths, checked when params are parsed rather than when a dataset is first built.
Jitter = Annotated[list[float], AfterValidator(_check_jitter)]
# SGD momentum: 1 or more never forgets a gradient and diverges.
Momentum = Annotated[float, Field(ge=0, lt=1)]
# Learning rate: positive and finite (finite is every float's rule here).
LearningRate = Annotated[float, Field(gt=0)]
