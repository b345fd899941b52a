"""Model-update aggregators by name: name -> factory(config) (None = TFF's weighted mean).

With `--algorithm=rpn` the selected aggregator becomes RPN's inner factory (what
aggregates the pooled residuals), so `--algorithm=rpn --aggregator=quantized`
is RPN stacked with 8-bit quantization.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from compression import quantization

AggregatorBuilder = Callable[[Any], Optional[Any]]

AGGREGATORS: dict[str, AggregatorBuilder] = {
    'mean': lambda cfg: None,
    'quantized': lambda cfg: quantization.QuantizedMeanFactory(
        bits=cfg.quantization_bits, threshold=cfg.quantization_threshold,
        stochastic=cfg.quantization_stochastic),
}
