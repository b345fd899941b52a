"""Algorithm registry: `--algorithm` name -> `base.AlgorithmSpec` (options + builder).

Adding an algorithm: its module (with its `Options` class and a `SPEC`), one
line here, and its tests (README "Adding an algorithm").
"""

from __future__ import annotations

from tff_programs.algorithms import base
from tff_programs.algorithms import fedavg
from tff_programs.algorithms import fedgkt
from tff_programs.algorithms import fedper
from tff_programs.algorithms import fedprox
from tff_programs.algorithms import rpn

ALGORITHMS: dict[str, base.AlgorithmSpec] = {spec.name: spec for spec in (
    fedavg.FEDAVG,
    fedavg.FEDSGD,
    rpn.SPEC,
    fedper.SPEC,
    fedgkt.SPEC,
    fedprox.SPEC,
)}
