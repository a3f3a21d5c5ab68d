"""Base of every params section: strict types, unknown keys refused, frozen after parsing."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
