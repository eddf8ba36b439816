"""The judge's seven metrics: what each measures and what each point of its 1-5 scale means.

The paper's metrics in three groups (emotional: empathy, helpfulness; cultural: socio-political
influence, cultural knowledge, cultural context; overall: fluency, communication), written for
jaxcult. A rubric file (YAML `metric: {group, definition, scale: {1: ..., 5: ...}}`) replaces
built-ins or adds metrics; every scale point 1-5 must be described.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from jaxcult.errors import UserError

POINTS = (1, 2, 3, 4, 5)
GROUPS = ("emotional", "cultural", "overall")


@dataclass(frozen=True)
class Metric:
    name: str
    group: str
    definition: str
    scale: tuple[str, ...]     # the meaning of points 1..5

    def rubric(self) -> str:
        return "\n".join(f"{point}: {text}" for point, text in zip(POINTS, self.scale))


BUILT_IN = {
    "empathy": Metric("empathy", "emotional",
                      "How well the reply grasps what the poster feels and answers those feelings "
                      "with real, well-timed care.", (
                          "ignores the poster's feelings or brushes them aside",
                          "names the feelings vaguely; the care sounds thin or generic",
                          "recognises the feelings and offers some support, not very personal",
                          "warm and considerate, answers the feelings well with small gaps",
                          "deeply understanding; the care is sincere and fits this poster")),
    "helpfulness": Metric("helpfulness", "emotional",
                          "Whether the reply gives practical help with the poster's actual "
                          "problem: relevant, concrete steps they could take.", (
                              "no useful help for the problem",
                              "generic advice that barely touches the problem",
                              "some useful advice, but shallow or not fitted to the poster",
                              "relevant, practical advice with minor gaps",
                              "clear, concrete help fitted to the poster's situation")),
    "socio_political": Metric("socio_political", "cultural",
                              "Whether the reply sees how the social and political system around "
                              "the poster (institutions, discrimination, migration, class, "
                              "gender roles) shapes their situation.", (
                                  "denies or contradicts the structural pressures the poster "
                                  "describes",
                                  "treats a structural problem as purely personal",
                                  "neutral: neither engages with nor denies the wider context",
                                  "aware of the relevant pressures, without exploring them fully",
                                  "clearly recognises the systemic forces and validates the "
                                  "poster's experience of them")),
    "cultural_knowledge": Metric("cultural_knowledge", "cultural",
                                 "How accurately and specifically the reply shows knowledge of the "
                                 "poster's culture, without stereotypes.", (
                                     "wrong, stereotyped or offensive about the culture, or "
                                     "blind to it",
                                     "shallow or generic statements about the culture",
                                     "culturally polite but vague; no real insight",
                                     "respectful and informed, with some specific references",
                                     "accurate, nuanced, specific knowledge of the culture")),
    "cultural_context": Metric("cultural_context", "cultural",
                               "Whether the reply understands the problem inside the poster's "
                               "cultural frame (family duty, honour, religion, stigma, community) "
                               "instead of an outsider's.", (
                                   "dismisses or overrides the poster's cultural frame",
                                   "overlooks or misreads the cultural factors",
                                   "culturally neutral support that does not engage the frame",
                                   "good grasp of the frame with small generalisations",
                                   "firmly grounded in the poster's own cultural frame")),
    "fluency": Metric("fluency", "overall",
                      "How well written the reply is: grammar, clarity, natural flow. Judge the "
                      "language only, not the content.", (
                          "hard to understand; many errors",
                          "understandable with effort; clear problems",
                          "mostly fluent with some awkward phrasing",
                          "fluent and natural with very small slips",
                          "effortless, natural and error-free")),
    "communication": Metric("communication", "overall",
                            "Whether the reply's tone and manner suit this poster: warmth, "
                            "directness and formality that fit their state and background.", (
                                "harmful tone: dismissive, judging, cold or offensive",
                                "clearly mismatched tone; awkward or distant",
                                "neutral or slightly off; tries to connect",
                                "mostly fitting with small mismatches",
                                "tone closely attuned to the poster's emotional and cultural "
                                "needs")),
}


def _metric(name: str, entry: object, where: str) -> Metric:
    if not isinstance(entry, dict) or not isinstance(entry.get("definition"), str):
        raise UserError(f"{where}: metric {name!r} needs a 'definition' and a 'scale'")
    group = entry.get("group", "overall")
    if group not in GROUPS:
        raise UserError(f"{where}: metric {name!r} has group {group!r}, not one of "
                        f"{', '.join(GROUPS)}")
    scale = entry.get("scale")
    if not isinstance(scale, dict):
        raise UserError(f"{where}: metric {name!r}: 'scale' must map each point 1-5 to its "
                        f"meaning")
    points = {int(k) if str(k).isdigit() else k: v for k, v in scale.items()}
    for point in POINTS:
        if not isinstance(points.get(point), str) or not points[point].strip():
            raise UserError(f"{where}: metric {name!r}: scale point {point} is missing")
    extra = sorted(str(k) for k in points if k not in POINTS)
    if extra:
        raise UserError(f"{where}: metric {name!r}: scale point {extra[0]} is not one of 1-5")
    return Metric(name, group, entry["definition"].strip(), tuple(points[p].strip()
                                                                    for p in POINTS))


def load_metrics(names: list[str] | None, rubric_file: Path | None) -> dict[str, Metric]:
    """The metrics to judge (all by default), built-ins overridden by the rubric file."""
    metrics = dict(BUILT_IN)
    if rubric_file is not None:
        if not rubric_file.is_file():
            raise UserError(f"{rubric_file}: rubric file not found")
        found = yaml.safe_load(rubric_file.read_text(encoding="utf-8"))
        if not isinstance(found, dict) or not found:
            raise UserError(f"{rubric_file}: expected a mapping of metric name to {{group, "
                            f"definition, scale}}")
        for name, entry in found.items():
            metrics[str(name)] = _metric(str(name), entry, str(rubric_file))
    if names is None:
        return metrics
    unknown = [n for n in names if n not in metrics]
    if unknown:
        raise UserError(f"unknown judge metric {unknown[0]!r} (known: {', '.join(metrics)})")
    return {name: metrics[name] for name in names}
