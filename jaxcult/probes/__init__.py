"""Learning-dynamics probes beside tr(F): a registry, the built-ins and their pure measures.

Importing this package registers `grad_norm`, `update_ratio`, `hessian_top`, `noise_scale`,
`cka`.
"""

from jaxcult.probes import builtin as _builtin  # noqa: F401  (registers)
from jaxcult.probes.base import PROBES, Probe, ProbeInput, register_probe, resolve_probe

__all__ = ["PROBES", "Probe", "ProbeInput", "register_probe", "resolve_probe"]
