"""CLCA stages against the paper's definitions, with scripted models (no weights): prompt
contents, answer parsing (malformed answers included), the judge's discard rule, intents,
the three training views, and the pipeline's files, resume and errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from jaxcult.config import GenerationConfig
from jaxcult.data.cultures import (
    HOFSTEDE_POLES,
    find_culture,
    hofstede_phrase,
    inglehart_welzel_phrase,
    load_cultures,
    verbalise,
)
from jaxcult.data.scenarios import read_scenarios
from jaxcult.errors import UserError
from jaxcult.generation.chat import EngineChatModel, Reply
from jaxcult.recipes.clca import prompts, run_stages
from jaxcult.recipes.clca.config import ClcaJudgeConfig
from jaxcult.recipes.clca.intents import annotate, culture_mention_share, mentions
from jaxcult.recipes.clca.judge import discarded
from jaxcult.recipes.clca.judge import judge as judge_records
from jaxcult.recipes.clca.parsing import Verdict, parse_action, parse_intent, parse_verdict
from jaxcult.recipes.clca.roleplay import Behaviour, Dialogue, simulate
from jaxcult.recipes.clca.views import build_views

SCENARIOS = Path(__file__).resolve().parent.parent / "experiments" / "clca" / "scenarios"
CULTURES = load_cultures()
UK = CULTURES["uk"]
SCENARIO = read_scenarios(SCENARIOS / "uk.jsonl")[0]   # Oliver Hughes and Priya Shah
GREEDY = GenerationConfig()


class Scripted:
    """A chat model whose answer is `respond(chat)`; it records every chat it was asked."""

    name = "scripted"

    def __init__(self, respond) -> None:
        self.respond, self.asked = respond, []

    def reply(self, chats, config, stream=0, prefix=""):
        self.asked.extend(chats)
        return [r if isinstance(r, Reply) else Reply(prefix + r)
                for r in (self.respond(chat) for chat in chats)]


def speaker(chat) -> str:
    return re.search(r"^You are (.+?)\. Speak and act", chat[0]["content"], re.M).group(1)


def turn_of(chat) -> int:
    return int(re.search(r"Turn #(\d+)", chat[-1]["content"]).group(1))


# -- culture descriptions and scenarios -------------------------------------------------------

# The paper's Tables 17/18 as the official code lists them (culture_persona_var.py), in its
# words: the two Inglehart-Welzel levels, then Hofstede's six dimensions in order.
OFFICIAL_LEVELS = {
    "mexico": ("little self-expression, moderately traditional",
               "highly hierarchical, moderately collective, moderate achievement, "
               "high uncertainty-avoidance, highly normative, highly indulgent"),
    "china": ("little survival, moderately secular",
              "highly hierarchical, moderately collective, moderate achievement, "
              "moderately risk-taking, highly pragmatic, highly restrained"),
    "japan": ("moderate self-expression, uttermost secular",
              "moderately hierarchical, moderately individualistic, high achievement, "
              "high uncertainty-avoidance, highly pragmatic, moderately restrained"),
    "germany": ("uttermost self-expression, moderately secular",
                "moderately equal, highly individualistic, moderate achievement, "
                "moderately uncertainty-avoidance, moderately pragmatic, moderately restrained"),
    "uk": ("uttermost self-expression, moderately secular",
           "moderately equal, highly individualistic, moderate achievement, "
           "moderately risk-taking, moderately pragmatic, moderately indulgent"),
}
DEGREE = {"little": 1, "slightly": 1, "moderate": 2, "moderately": 2, "uttermost": 3,
          "strong": 3, "strongly": 3}          # Inglehart-Welzel: three degrees
HOFSTEDE_DEGREE = {"moderate": 1, "moderately": 1, "high": 2, "highly": 2}
POLE = {"equal": "egalitarian", "collective": "collectivist", "achievement": "achievement-driven",
        "uncertainty-avoidance": "uncertainty-avoiding", "self-expression": "self-expression",
        "survival": "survival"}


def levels(line: str, degrees: dict) -> list[tuple[int, str]]:
    out = []
    for phrase in line.split(", "):
        degree, pole = phrase.split(" ", 1)
        pole = pole.removesuffix(" values")
        out.append((degrees[degree], POLE.get(pole, pole)))
    return out


def test_culture_descriptions_state_the_papers_levels():
    for key, (inglehart, hofstede) in OFFICIAL_LEVELS.items():
        first, second = CULTURES[key].description.splitlines()
        assert levels(first.split(": ", 1)[1], DEGREE) == levels(inglehart, DEGREE)
        assert levels(second.split(": ", 1)[1], HOFSTEDE_DEGREE) == \
            levels(hofstede, HOFSTEDE_DEGREE)
    by_score = verbalise(
        {d: hofstede_phrase(d, 50) for d in HOFSTEDE_POLES},
        {"self_expression": inglehart_welzel_phrase("self_expression", -1.5),
         "secular": inglehart_welzel_phrase("secular", 0.0)})
    assert by_score.count("moderately") == 6 and "strong survival values" in by_score
    assert find_culture(CULTURES, "British", "x").key == "uk"
    with pytest.raises(UserError, match="unknown culture 'Atlantis'.*cultures_file"):
        find_culture(CULTURES, "Atlantis", "x")


@pytest.mark.parametrize(("hofstede", "message"), [
    ("power_distance: very hierarchical", "power_distance: expected a number or one of "
                                          "moderately egalitarian, highly egalitarian"),
    ("power_distance: 40\n    caste: 3", "unknown dimension 'caste'"),
])
def test_a_culture_file_with_an_unknown_level_is_refused(tmp_path, hofstede, message):
    path = tmp_path / "cultures.yaml"
    rest = "\n".join(f"    {d}: 50" for d in HOFSTEDE_POLES if d != "power_distance")
    path.write_text(f"atlantis:\n  adjective: Atlantean\n  country: Atlantis\n  hofstede:\n"
                    f"    {hofstede}\n{rest}\n  inglehart_welzel: {{self_expression: 0.2, "
                    f"secular: strongly secular}}\n")
    with pytest.raises(UserError, match=f"{path}: atlantis: hofstede: {message}"):
        load_cultures(path)
    path.write_text(path.read_text().replace(hofstede, "power_distance: 40"))
    assert "moderately egalitarian" in load_cultures(path)["atlantis"].description


def test_shipped_scenarios_are_ten_per_culture_and_well_formed():
    for key in ("uk", "china", "germany", "mexico", "japan"):
        scenarios = read_scenarios(SCENARIOS / f"{key}.jsonl")
        assert len(scenarios) == 10 and len({s.id for s in scenarios}) == 10
        assert all(find_culture(CULTURES, s.culture, key).key == key for s in scenarios)


@pytest.mark.parametrize(("record", "message"), [
    ({"person1": None}, "expected an object 'person1'"),
    ({"person1": {"name": "A"}}, "person1: expected a non-empty text field 'background'"),
    ({"persona": "Someone and Else"}, "persona 'Someone and Else' must be"),
    ({"setting": 3}, "expected a non-empty text field 'setting'"),
    ("not an object", "expected a JSON object"),
])
def test_malformed_scenarios_name_the_file_line_and_field(tmp_path, record, message):
    good = json.loads((SCENARIOS / "uk.jsonl").read_text().splitlines()[0])
    bad = record if isinstance(record, str) else {**good, **record}
    path = tmp_path / "uk.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=f"{path}:2: .*{message}"):
        read_scenarios(path)


# -- role-play ------------------------------------------------------------------------------

def test_agent_prompts_hold_own_goal_and_secrets_but_not_the_others():
    me, other = SCENARIO.person1, SCENARIO.person2
    history = [prompts.history_line(me.name, "speak", "Morning!")]
    system = prompts.agent_chat(SCENARIO, me, other, UK, 2, history)[0]["content"]
    for text in (SCENARIO.setting, SCENARIO.persona, UK.description, me.background,
                 me.occupation, me.goal, me.secrets, other.background, other.occupation):
        assert text in system
    assert other.goal not in system and other.secrets not in system
    assert f"About {other.name}:\nBackground: {other.background}\nOccupation: " \
           f"{other.occupation}\nGoal: Unknown" in system


def test_the_turn_prompt_carries_the_official_history_actions_leave_rule_and_language():
    """The official turn prompt (generate_scenarios.FORMAT_TEMPLATE, IDX2HT): the history as
    "Name - ACTION: a / OUTPUT: o" entries (a fixed line before the first), the turn number,
    the four numbered action types, leaving as soon as the goal is achieved or has a clear
    outcome either way, the two-line schema with what OUTPUT holds per action, English only."""
    me, other = SCENARIO.person1, SCENARIO.person2
    history = [prompts.history_line(me.name, "speak", "Morning!"),
               prompts.history_line(other.name, "non-verbal communication", "waves"),
               prompts.history_line(me.name, "none", "")]
    user = prompts.agent_turn(me, 2, history)
    assert (f"{me.name} - ACTION: speak\nOUTPUT: Morning!\n{other.name} - ACTION: non-verbal\n"
            f"OUTPUT: waves\n{me.name} - ACTION: none\nOUTPUT: NONE") in user
    assert "Turn #2" in user and "1. none, 2. non-verbal, 3. speak, 4. leave" in user
    assert re.search(r"4\. leave as soon as 1\) you have achieved your own social goals, or 2\) "
                     r"the goal has a clear outcome, whether success or failure", user)
    assert "ACTION: <action_type>\nOUTPUT: <your_output>" in user
    assert all(f"for {a}" in user for a in ("3. speak", "2. non-verbal", "4. leave"))
    assert user.endswith("in English only:")
    assert prompts.NO_HISTORY in prompts.agent_turn(me, 1, [])


ID2ACT = {"1": "none", "2": "action", "3": "speak", "4": "leave"}   # the official numbering


def official_action(answer: str) -> tuple[str, str]:
    """The official code's reading of a two-line answer (parse_generated_outputs and
    normalize_action): text after "ACTION:" and "OUTPUT:", a number (or a leading digit) looked
    up in ID2ACT ("2" = "action", the non-verbal type), an empty action "none"."""
    action, output = answer.split("\n")
    action = action.split("ACTION:")[-1].strip()
    output = output.split("OUTPUT:")[-1].strip()
    if not action:
        return "none", output
    if action[0].isnumeric():
        return ID2ACT.get(action[0], "1"), output
    return action, output


@pytest.mark.parametrize("answer", [
    "ACTION: 3\nOUTPUT: Lovely morning.", "ACTION: 3. speak\nOUTPUT: Lovely morning.",
    "ACTION: 2\nOUTPUT: nods", "ACTION: 2. non-verbal\nOUTPUT: nods",
    "ACTION: 4\nOUTPUT: I must go, goodbye.", "ACTION: leave\nOUTPUT: Bye then.",
    "ACTION: speak\nOUTPUT: Hello there", "ACTION: 1\nOUTPUT: NONE"])
def test_numbered_and_named_actions_read_as_the_official_code_reads_them(answer):
    action, output = official_action(answer)
    found = parse_action(answer)
    assert found.action == {"action": "non-verbal communication"}.get(action, action)
    assert found.text == ("" if output == "NONE" else output)


@pytest.mark.parametrize(("text", "action", "said"), [
    ("ACTION: speak\nOUTPUT: Lovely morning, isn't it?", "speak", "Lovely morning, isn't it?"),
    ("action: Speak. OUTPUT: \"Hello there\"", "speak", "Hello there"),
    ("**ACTION:** non-verbal\nOUTPUT: nods politely", "non-verbal communication", "nods politely"),
    ("ACTION: leave\nOUTPUT:", "leave", ""),
    ("ACTION: none", "none", ""),
    ("ACTION: speak\nOUTPUT: Oliver Hughes: Right you are.", "speak", "Right you are."),
    ("ACTION: speak\nOUTPUT: one\nACTION: leave\nOUTPUT: two", "speak", "one"),
])
def test_action_answers_parse(text, action, said):
    found = parse_action(text, "Oliver Hughes")
    assert (found.action, found.text) == (action, said)


@pytest.mark.parametrize("text", ["Hello, how are you?", "ACTION: dance\nOUTPUT: twirls",
                                  "ACTION: speak\nOUTPUT:   ", "OUTPUT: hi", ""])
def test_malformed_action_answers_are_none(text):
    assert parse_action(text) is None


def run(dialogues, model, responder=None, turns=4, **how):
    return simulate(dialogues, model, responder or model, max_turns=turns,
                    how=Behaviour(GREEDY, **how))


def test_dialogue_alternates_until_an_agent_leaves_and_records_the_schema():
    def respond(chat):
        if speaker(chat) == "Priya Shah" and turn_of(chat) == 2:
            return "ACTION: leave\nOUTPUT: I must get back to my boxes."
        return f"ACTION: speak\nOUTPUT: line {turn_of(chat)} of {speaker(chat)}"
    model = Scripted(respond)
    [record] = run([Dialogue(SCENARIO, UK, 0)], model)
    assert record["num_turns"] == 2 and record["stop_reason"] == "leave"
    assert record["persona"] == "Oliver Hughes and Priya Shah" and record["sample"] == 0
    assert record["dialog"][1] == {"turn": 2, "inquirer_action": "speak",
                                   "inquirer": "line 2 of Oliver Hughes",
                                   "responder_action": "leave",
                                   "responder": "I must get back to my boxes."}
    last_prompt = model.asked[-1][-1]["content"]   # the responder sees the whole history
    assert "Oliver Hughes - ACTION: speak\nOUTPUT: line 1 of Oliver Hughes" in last_prompt
    assert "Priya Shah - ACTION: speak\nOUTPUT: line 1 of Priya Shah" in last_prompt


def test_malformed_answers_are_repaired_once_then_recorded_as_failures():
    def respond(chat):
        if "does not follow the required format" in chat[-1]["content"]:
            return "ACTION: speak\nOUTPUT: fixed" if "fixable" in chat[-1]["content"] else "no"
        if speaker(chat) == "Oliver Hughes":
            return "fixable rambling" if turn_of(chat) == 1 else "hopeless rambling"
        return "ACTION: speak\nOUTPUT: fine"
    [record] = run([Dialogue(SCENARIO, UK, 0)], Scripted(respond))
    assert record["repairs"] == 1 and record["stop_reason"] == "parse_failure"
    assert record["dialog"][0]["inquirer"] == "fixed" and record["num_turns"] == 1
    assert record["parse_failures"] == [{"turn": 2, "role": "inquirer",
                                         "raw": "hopeless rambling", "taken_as_speech": False}]
    [spoken] = run([Dialogue(SCENARIO, UK, 0)], Scripted(respond), turns=2, repair=False,
                   on_parse_failure="speak")
    assert spoken["stop_reason"] == "max_turns" and spoken["dialog"][0]["inquirer"] == \
        "fixable rambling" and len(spoken["parse_failures"]) == 2


def test_max_turns_and_context_overflow_end_dialogues_independently():
    def respond(chat):
        if speaker(chat) == "James Turner":   # the responder of the second scenario
            return Reply("", "prompt has 9999 tokens, more than the largest length bucket")
        return "ACTION: speak\nOUTPUT: hi"
    other = read_scenarios(SCENARIOS / "uk.jsonl")[1]
    records = run([Dialogue(SCENARIO, UK, 0), Dialogue(other, UK, 0)], Scripted(respond), turns=3)
    assert [r["stop_reason"] for r in records] == ["max_turns", "context_overflow"]
    assert [r["num_turns"] for r in records] == [3, 1]
    assert records[1]["dialog"][0]["responder_action"] is None
    assert "largest length bucket" in records[1]["parse_failures"][0]["error"]


# -- judge ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind", "verdict", "confidence"), [
    ("Quality: good\nConfidence: very confident", "quality", "good", "very confident"),
    ("quality: Bad.\nConfidence: 95%", "quality", "bad", "very confident"),
    ("Culture alignment: not aligned\nConfidence: somewhat", "culture", "not aligned", None),
    ("Culture alignment: misaligned\nConfidence: 0.6", "culture", "not aligned", "not sure"),
    ("Culture alignment: aligned to the culture", "culture", "aligned", None),
    ("It seems fine to me.", "quality", None, None),
    ("Quality: maybe\nConfidence: I am not sure", "quality", None, "not sure"),
    ("Quality: 7\nConfidence: 4", "quality", None, None),
])
def test_verdicts_parse(text, kind, verdict, confidence):
    found = parse_verdict(text, kind)
    assert (found.verdict, found.confidence) == (verdict, confidence)


CHOICES = {"quality": ("good", "bad"), "culture": ("aligned", "not aligned"), "meta": ("good", "bad")}


def official_verdict(answer: str, kind: str) -> tuple[str, str]:
    """The official judge's reading (dialog_judge.JudgeModel): the value after the last ":" of
    the label and confidence lines; a label starting with 1 or 2 is that choice; a confidence
    starting with 1 is "very confident", with 2 "confident", anything else "not sure"."""
    lines = answer.split("\n")
    label, confidence = (lines[0], lines[1]) if kind == "meta" else (lines[-2], lines[-1])
    label, confidence = label.split(":")[-1].strip(), confidence.split(":")[-1].strip()
    label = {"1": CHOICES[kind][0], "2": CHOICES[kind][1]}.get(label[:1], label)
    return label, {"1": "very confident", "2": "confident"}.get(confidence[:1], "not sure")


@pytest.mark.parametrize(("answer", "kind"), [
    ("Quality: 1\nConfidence: 2", "quality"), ("Quality: 2\nConfidence: 1", "quality"),
    ("Quality: 2. bad\nConfidence: 1. very confident", "quality"),
    ("Culture alignment: 1\nConfidence: 3", "culture"),
    ("Culture alignment: 2. not aligned to the culture\nConfidence: 2", "culture"),
    ("Meta label: 2\nConfidence: 1\nCritic: too formal for neighbours", "meta"),
    ("Meta label: 1. good\nConfidence: 3. not sure\nCritique: fine", "meta"),
])
def test_numbered_verdicts_read_as_the_official_judge_reads_them(answer, kind):
    found = parse_verdict(answer, kind)
    assert (found.verdict, found.confidence) == official_verdict(answer, kind)


def test_meta_critique_is_kept():
    text = "Meta label: 2\nConfidence: 2\nCritique: Too formal for neighbours."
    assert parse_verdict(text, "meta").critique == "Too formal for neighbours."


def test_judges_see_the_scenario_record_the_dialog_and_numbered_choices():
    """As the official judge prompts: the whole scenario record as JSON, the dialog turn by
    turn as Person 1 / Person 2, the label and three confidence levels as numbered choices,
    quality judged on repetition and fit to the setting, and the meta judge reading the first
    two judgements and judging cultural alignment, not the goals."""
    dialog = prompts.judge_dialog([(1, "Morning!", "*waves*"), (2, "Lovely day.", "")])
    found = {}
    for kind in ("quality", "culture", "meta"):
        [message] = prompts.judge_chat(kind, SCENARIO, dialog, UK,
                                       "Culture alignment: aligned (confident)\nQuality: good "
                                       "(very confident)")
        text = found[kind] = message["content"]
        record = json.loads(text.split("basic information:\n")[1].split("\n")[0])
        assert record["person2"]["secrets"] == SCENARIO.person2.secrets
        assert record["setting"] == SCENARIO.setting and record["persona"] == SCENARIO.persona
        assert "Turn 1\nPerson 1: Morning!\nPerson 2: *waves*\nTurn 2\nPerson 1: Lovely day." in text
        assert "Confidence choices: 1. very confident, 2. confident, 3. not sure" in text
        assert "choice numbers only" in text
    assert "Quality choices: 1. good, 2. bad" in found["quality"]
    assert "repeat towards its end" in found["quality"] and "setting" in found["quality"]
    assert "1. aligned to the culture, 2. not aligned to the culture" in found["culture"]
    assert "British culture" in found["culture"]
    assert "Meta label choices: 1. good, 2. bad" in found["meta"]
    assert "do not judge whether the goals" in found["meta"]
    assert "Culture alignment: aligned (confident)\nQuality: good (very confident)" in found["meta"]
    assert found["meta"].endswith("Critique: <critique>")
    assert "Culture alignment: aligned" not in found["quality"]


def test_prefill_field_starts_each_judge_answer_with_its_field():
    """`judge.prefill_field: true` hands each judge its schema's first field as the answer's
    start (the model continues it); off, no prefix."""
    record = dialogue_record()
    for prefill, expected, meta in ((True, ["Quality:", "Culture alignment:", "Meta label:"],
                                     "very confident"), (False, ["", "", ""], "confident")):
        prefixes = []

        class Recording(Scripted):
            def reply(self, chats, config, stream=0, prefix=""):
                prefixes.append(prefix)
                return super().reply(chats, config, stream, prefix)
        model = Recording(lambda chat: " 1\nConfidence: 1\nCritique: fine" if prefill else
                          scripted_everything(chat))
        [judged] = judge_records([record], [SCENARIO], [UK], model,
                                 ClcaJudgeConfig(prefill_field=prefill))
        assert prefixes == expected
        assert judged["judgement"]["quality"]["verdict"] == "good"
        assert judged["judgement"]["meta"]["confidence"] == meta


def test_the_papers_discard_rule():
    """Discard iff (meta bad and very confident) or (quality bad and very confident)."""
    rule = [[c.model_dump() for c in clause] for clause in ClcaJudgeConfig().discard_when]
    levels = ("very confident", "confident", "not sure", None)
    for quality in ("good", "bad", None):
        for meta in ("good", "bad", None):
            for q_conf in levels:
                for m_conf in levels:
                    verdicts = {"quality": Verdict(quality, q_conf),
                                "culture": Verdict("not aligned", "very confident"),
                                "meta": Verdict(meta, m_conf)}
                    expected = (meta == "bad" and m_conf == "very confident") or \
                        (quality == "bad" and q_conf == "very confident")
                    assert discarded(verdicts, rule) == expected
    unread = {"quality": Verdict(None, None), "culture": Verdict("aligned", "confident"),
              "meta": Verdict("good", "confident")}
    assert not discarded(unread, rule) and discarded(unread, rule, on_unparsed="discard")


def test_rule_settings_are_checked():
    with pytest.raises(ValueError, match="the culture judge answers aligned or not aligned"):
        ClcaJudgeConfig.model_validate({"discard_when": [[{"judge": "culture", "verdict": "bad"}]]})


# -- intents and views ----------------------------------------------------------------------

def dialogue_record() -> dict:
    def respond(chat):
        return f"ACTION: speak\nOUTPUT: {speaker(chat)} says {turn_of(chat)}"
    [record] = run([Dialogue(SCENARIO, UK, 0)], Scripted(respond), turns=2)
    return record


def test_intents_follow_each_utterance_and_unknown_fills_the_gaps():
    asked = []

    def respond(chat):
        asked.append(chat)
        last = chat[-1]["content"].split("\nFrom the conversation above")[0].splitlines()[-1]
        return "no idea" if "says 2" in last and "Priya" in last else \
            f"INTENT: be polite as the British do ({last[:12]})"
    [record] = annotate([dialogue_record()], [SCENARIO], [UK], Scripted(respond), GREEDY)
    assert [(i["turn"], i["role"]) for i in record["intents"]] == [
        (1, "inquirer"), (1, "responder"), (2, "inquirer"), (2, "responder")]
    assert record["intents"][-1]["intent"] == "unknown"
    assert "predict Priya Shah's intent" in asked[1][-1]["content"]
    assert asked[1][-1]["content"].startswith("Oliver Hughes: Oliver Hughes says 1\n"
                                              "Priya Shah: Priya Shah says 1")
    assert "expert on the British culture" in asked[0][0]["content"]
    assert culture_mention_share([record], [UK]) == 1.0
    assert parse_intent("INTENT: to apologise\n\nBecause...") == "to apologise"
    assert parse_intent("to apologise") is None
    assert mentions("respecting English reserve", UK) and not mentions("being kind", UK)


def annotated_record() -> dict:
    """A two-turn dialogue with its intents, one of them unknown."""
    record = dialogue_record()
    record["intents"] = [{"turn": 1, "role": "inquirer", "intent": "greet"},
                         {"turn": 1, "role": "responder", "intent": "unknown"},
                         {"turn": 2, "role": "inquirer", "intent": "ask"},
                         {"turn": 2, "role": "responder", "intent": "agree"}]
    return record


def test_the_three_views():
    record = annotated_record()
    views = {v["view"]: v for v in build_views(record, SCENARIO, UK)}
    first, second = views["perspective1"]["messages"], views["perspective2"]["messages"]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["role"] for m in second] == ["system", "assistant", "user", "assistant"]
    assert first[2]["content"] == "Priya Shah says 1" and second[1]["content"] == \
        "Oliver Hughes says 1"
    assert "You are Priya Shah: speak and act as Priya Shah" in first[0]["content"]
    assert "member of the British culture" in first[0]["content"]
    assert SCENARIO.person1.name not in first[0]["content"]
    for system in (first[0]["content"], second[0]["content"]):
        assert SCENARIO.setting in system and UK.description not in system
        assert SCENARIO.person1.goal not in system and SCENARIO.person1.secrets not in system
    intents = [v for v in build_views(record, SCENARIO, UK, intent_layout="utterance")
               if v["view"] == "intent"]
    assert [v["messages"][1:] for v in intents][0] == [
        {"role": "user", "content": "Oliver Hughes: Oliver Hughes says 1"},
        {"role": "assistant", "content": "Intent: greet"}]
    assert len(intents) == 3   # the unknown one is left out
    assert {v["view"] for v in build_views(record, SCENARIO, UK, ("intent",))} == {"intent"}


def official_view_person(perspective: int) -> str:
    """Whom the official perspective system prompt describes (model_tuning.
    get_sys_prompt_from_personas): person1 for perspective 1, person2 for perspective 2, while
    perspective 1's assistant turns are person2's utterances (and the reverse)."""
    return SCENARIO.person1.name if perspective == 1 else SCENARIO.person2.name


def test_the_official_view_persona_describes_the_user_side_speaker():
    record = annotated_record()
    for persona, described in (("user", official_view_person),
                               ("assistant", lambda p: official_view_person(3 - p))):
        views = {v["view"]: v["messages"] for v in build_views(record, SCENARIO, UK,
                                                                 view_persona=persona)}
        for number in (1, 2):
            system = views[f"perspective{number}"][0]["content"]
            name = described(number)
            person = SCENARIO.person1 if name == SCENARIO.person1.name else SCENARIO.person2
            assert f"About {name}:\nBackground: {person.background}\nOccupation: " \
                   f"{person.occupation}\nYou are {name}:" in system


def _official_intent_chat(record: dict, first: str, second: str) -> list[dict]:
    """The official code's intent layout (model_tuning.get_prompt_intent) after its system
    prompt: for every turn of the dialog, the inquirer's then the responder's utterance as a
    user turn "Name: text", each followed by "Intent: ..." as an assistant turn, a missing
    intent written "unknown" (its trailing newline aside)."""
    intent = {(i["turn"], i["role"]): i["intent"] for i in record["intents"]}
    chat = []
    for number, turn in enumerate(record["dialog"], 1):
        for role, name in (("inquirer", first), ("responder", second)):
            chat += [{"role": "user", "content": f"{name}: {turn[role].strip()}"},
                     {"role": "assistant", "content": f"Intent: {intent.get((number, role)) or 'unknown'}"}]
    return chat


def test_the_intent_view_is_one_conversation_as_in_the_official_code():
    record = annotated_record()
    intents = [v for v in build_views(record, SCENARIO, UK) if v["view"] == "intent"]
    assert len(intents) == 1
    system, *turns = intents[0]["messages"]
    assert system["role"] == "system" and SCENARIO.setting in system["content"]
    # the official training template: the scenario, both names and the task, no backgrounds
    assert f"{SCENARIO.person1.name} and {SCENARIO.person2.name}" in system["content"]
    assert "Predict each participant's intent" in system["content"]
    assert SCENARIO.person1.background not in system["content"]
    assert turns == _official_intent_chat(record, SCENARIO.person1.name, SCENARIO.person2.name)
    assert {"role": "assistant", "content": "Intent: unknown"} in turns   # kept


# -- the pipeline ---------------------------------------------------------------------------

def scripted_everything(chat) -> str:
    text = chat[-1]["content"]
    if "INTENT: <intent>" in text:
        return "INTENT: keep face, as is usual in Japan"
    if "Meta label: <choice>" in text:
        return "Meta label: 1\nConfidence: 2\nCritique: natural"
    if "Culture alignment: <choice>" in text:
        return "Culture alignment: 1\nConfidence: 2"
    if "Quality: <choice>" in text:
        bad = "Hiroshima" in chat[-1]["content"]   # ja-10's conversation is judged bad
        return f"Quality: {2 if bad else 1}\nConfidence: 1"
    return f"ACTION: speak\nOUTPUT: {speaker(chat)} at turn {turn_of(chat)}"


def write_config(tmp_path: Path, **extra) -> Path:
    train = tmp_path / "train.yaml"
    train.write_text("task: {name: causal_lm}\npeft: {kind: lora}\n")
    settings = {"scenarios": str(SCENARIOS), "cultures": ["japan"], "scenarios_per_culture": 3,
                "simulate": {"max_turns": 2, "samples": 1, "dialogues_per_batch": 2},
                "train": {"config": str(train)}, **extra}
    path = tmp_path / "clca.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_pipeline_stages_write_resumable_outputs(tmp_path):
    config, out = write_config(tmp_path), tmp_path / "out"
    model = Scripted(scripted_everything)
    models = {"smollm2-135m-instruct": model}
    for stage in ("simulate", "judge", "annotate", "build"):
        run_stages(config, [], stage, out, models)
    dialogues = [json.loads(x) for x in (out / "dialogues.jsonl").read_text().splitlines()]
    assert [d["id"] for d in dialogues] == ["japan-01#0", "japan-02#0", "japan-03#0"]
    assert all(d["num_turns"] == 2 for d in dialogues)
    provenance = json.loads((out / "dialogues.provenance.json").read_text())
    assert provenance["prompts_hash"] == prompts.prompts_hash()
    assert provenance["models"] == ["smollm2-135m-instruct"] * 2
    train = [json.loads(x) for x in (out / "data/japan/train.jsonl").read_text().splitlines()]
    assert {r["view"] for r in train} == {"perspective1", "perspective2", "intent"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["annotate"]["japan"]["mention_culture"] == 1.0
    assert summary["build"]["japan"]["validation_conversations"] == 1
    asked = len(model.asked)
    run_stages(config, [], "simulate", out, models)       # finished: nothing is asked again
    run_stages(config, [], "judge", out, models)
    assert len(model.asked) == asked
    with (out / "dialogues.jsonl").open("a") as handle:  # a write torn by a kill
        handle.write('{"id": "japan-0')
    run_stages(config, ["scenarios_per_culture=4"], "simulate", out, models)
    ids = [json.loads(x)["id"] for x in (out / "dialogues.jsonl").read_text().splitlines()]
    assert ids == ["japan-01#0", "japan-02#0", "japan-03#0", "japan-04#0"]
    with pytest.raises(UserError, match="made with other settings \\(max_turns differ"):
        run_stages(config, ["simulate.max_turns=3"], "simulate", out, models)


def test_a_culture_the_judge_empties_stops_the_pipeline_with_its_reason(tmp_path):
    config, out = write_config(tmp_path), tmp_path / "out"
    models = {"smollm2-135m-instruct": Scripted(lambda chat: "Quality: 2\nConfidence: 1"
                                                if "Quality: <choice>" in chat[-1]["content"]
                                                else scripted_everything(chat))}
    for stage in ("simulate", "judge"):
        run_stages(config, [], stage, out, models)
    before = (out / "judged.jsonl").read_text()
    with pytest.raises(UserError, match="judge discarded every japan conversation \\(3\\)"):
        run_stages(config, [], "annotate", out, models)
    assert (out / "judged.jsonl").read_text() == before


def test_pipeline_input_errors(tmp_path):
    with pytest.raises(UserError, match="unknown culture 'atlantis'"):
        run_stages(write_config(tmp_path, cultures=["atlantis"]), [], "simulate",
                   tmp_path / "out", {})
    with pytest.raises(UserError, match="no records; run `jaxcult clca simulate` first"):
        run_stages(write_config(tmp_path), [], "judge", tmp_path / "out2", {})
    with pytest.raises(UserError, match="unknown key 'simulate.turns'"):
        run_stages(write_config(tmp_path), ["simulate.turns=3"], "simulate", tmp_path / "o", {})
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "japan.jsonl").write_text((SCENARIOS / "uk.jsonl").read_text())
    with pytest.raises(UserError, match="is set in 'UK', but the file holds the Japanese"):
        run_stages(write_config(tmp_path, scenarios=str(folder)), [], "simulate", tmp_path / "o", {})


def test_a_model_without_a_chat_template_is_refused():
    class Plain:
        chat_template = None
    with pytest.raises(UserError, match="no chat template"):
        EngineChatModel("plain-lm", object(), Plain())


def test_cli_exits_2_on_a_malformed_scenario(tmp_path, capsys):
    from jaxcult.cli import main

    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "japan.jsonl").write_text('{"culture": "Japan"}\n')
    code = main(["clca", "simulate", str(write_config(tmp_path, scenarios=str(folder))),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "japan.jsonl:1: expected an object 'person1'" in capsys.readouterr().err


@pytest.mark.parametrize("name, lr, epochs", [("qwen2.5-0.5b", 1e-4, 1), ("qwen2.5-1.5b", 1e-4, 1),
                                              ("qwen2.5-7b", 1e-4, 1),
                                              ("mistral-7b-v0.3", 5e-5, 3)])
def test_paper_training_configs_follow_table_14(repo, name, lr, epochs):
    from jaxcult.config_loading import load_config

    config = load_config(repo / "experiments" / "clca" / "train" / f"{name}.yaml", [])
    assert (config.optimizer.lr, config.trainer.epochs) == (lr, epochs)


def test_the_paper_pipeline_trains_on_every_kept_conversation(repo):
    """The official runs hold nothing out; the holdout stays an option (`validation_fraction`)."""
    from jaxcult.config_loading import load_section
    from jaxcult.recipes.clca.config import ClcaConfig
    from jaxcult.recipes.clca.stages import split_dialogues

    config = load_section(ClcaConfig, repo / "experiments" / "clca" / "pipeline.yaml", [])
    ids = [f"c{i}" for i in range(20)]
    train, held = split_dialogues(ids, config.build.validation_fraction, config.build.seed)
    assert train == set(ids) and held == set(ids)
    train, held = split_dialogues(ids, 0.1, 0)
    assert len(held) == 2 and not train & held
