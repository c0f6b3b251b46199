"""`none`: the student trained alone with cross-entropy, the from-scratch baseline of every table."""
from __future__ import annotations

from pydantic import Field

from ..registry import METHODS
from .base import Knobs, Method


class NoneKnobs(Knobs):
    lambda_ce: float = Field(1.0, gt=0, description="cross-entropy with labels")


@METHODS.register("none")
class Scratch(Method):
    Knobs = NoneKnobs
    needs_teacher = False

    def distill(self, step):
        return {}
