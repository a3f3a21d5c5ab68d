"""Base of every params section: strict types, unknown keys refused, frozen after parsing; shared field types."""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _check_jitter(v: list[float]) -> list[float]:
    if len(v) != 4 or min(v) < 0 or v[3] > 0.5:
        raise ValueError(
            f"jitter {v}: give 4 ColorJitter strengths (brightness, contrast, saturation, hue), each >= 0, "
            "hue at most 0.5"
        )
    return v


# ColorJitter strengths, checked when params are parsed rather than when a dataset is first built.
Jitter = Annotated[list[float], AfterValidator(_check_jitter)]
