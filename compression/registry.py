"""Model-update aggregators by name: name -> factory(config) (None = TFF's mean)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

AggregatorBuilder = Callable[[Any], Optional[Any]]

AGGREGATORS: dict[str, AggregatorBuilder] = {
    'mean': lambda cfg: None,
}
