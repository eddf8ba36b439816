"""The report of a plan (`jaxcult plan`): what was found, as a table and a verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Plan:
    """What `plan` found: per-device bytes from the analysis and from the compiler."""

    description: list[str]
    analytic: dict[str, int]
    compiled: dict[str, int]
    lower_seconds: float      # tracing and lowering the step (Python; grows with unrolled depth)
    compile_seconds: float    # XLA's compilation
    device_memory: int | None
    suggestions: list[str]

    @property
    def peak(self) -> int:
        return self.compiled["peak"]

    @property
    def fits(self) -> bool | None:
        return None if self.device_memory is None else self.peak <= self.device_memory


def _mib(value: int | None) -> str:
    return "" if value is None else f"{value / 2**20:12.1f} MiB"


def size(value: int) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def format_plan(plan: Plan) -> str:
    rows = [("frozen parameters", "frozen", None), ("trainable parameters", "trainable", None),
            ("optimizer state", "optimizer", None), ("batch", "batch", None),
            ("arguments", "arguments", "arguments"),
            ("activations (incl. logits)", "activations", None),
            ("gradients and updates", "gradients", None),
            ("temporaries", "temporaries", "temporaries"), ("outputs (not donated)", None, "outputs"),
            ("generated code", None, "code"), ("peak", "peak", "peak")]
    lines = [*plan.description, f"{'per device':<30}{'analytic':>16}{'compiler (XLA)':>18}"]
    for label, analytic, compiled in rows:
        lines.append(f"  {label:<28}{_mib(plan.analytic.get(analytic)):>16}"
                     f"{_mib(plan.compiled.get(compiled)):>18}")
    lines.append(f"trace and lower: {plan.lower_seconds:.1f} s, compile: {plan.compile_seconds:.1f} s")
    if plan.device_memory is not None:
        share = plan.peak / plan.device_memory
        verdict = "fits" if plan.fits else "does not fit"
        lines.append(f"verdict: {verdict} in {size(plan.device_memory)} per device "
                     f"(compiled peak {size(plan.peak)}, {share:.0%})")
        lines += [f"  suggestion: {text}" for text in plan.suggestions]
    return "\n".join(lines)
