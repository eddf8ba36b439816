"""A probe that preempts its own run at an exact step: when the environment names that step
(`JAXCULT_TEST_SIGTERM_AT`), the measurement there sends this process SIGTERM once, as a
cluster's preemption would, so interrupt-and-resume tests need no timing race."""

from __future__ import annotations

import os
import signal

from jaxcult.probes import Probe, ProbeInput

VARIABLE = "JAXCULT_TEST_SIGTERM_AT"


class SigtermAt(Probe):
    name = "sigterm_at"

    def measure(self, probe_input: ProbeInput) -> dict[str, dict[str, float]]:
        if os.environ.get(VARIABLE) == str(probe_input.step):
            del os.environ[VARIABLE]  # once: a second signal would stop without a checkpoint
            os.kill(os.getpid(), signal.SIGTERM)
        return {"value": {group: 0.0 for group in self.groups}}
