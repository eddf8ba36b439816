"""Cultural commonsense graphs (issue 43's building blocks): node merging at the threshold,
maximal paths against a brute-force enumeration, edge cleaning, the JSON repair of teacher
replies, sentence embeddings against sentence-transformers, retrieval against a brute-force
cosine ranking."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
from conftest import needs_minilm, require_asset

from jaxcult.eval.sentence_embeddings import SentenceEncoder, cosine_matrix, top_k
from jaxcult.recipes.cckg.graph import (
    Edge,
    clean_edges,
    maximal_paths,
    merge_targets,
    relations_along,
    render,
)
from jaxcult.recipes.cckg.replies import parse_expansion, parse_generation, repair_object


def test_merging_happens_strictly_above_the_threshold():
    similarity = np.array([[0.8, 0.79],             # at the threshold: a new node
                           [0.8000001, 0.95],       # just above: the first above, or the best
                           [0.1, 0.2]])
    assert merge_targets(similarity, 0.8) == [None, 0, None]
    assert merge_targets(similarity, 0.8, merge="best") == [None, 1, None]


def _brute_force_maximal(edges, sources):
    nodes = sorted({e.source for e in edges} | {e.target for e in edges})
    linked = {(e.source, e.target) for e in edges}
    paths = [p for n in range(2, len(nodes) + 1) for p in itertools.permutations(nodes, n)
             if p[0] in sources and all(pair in linked for pair in zip(p, p[1:]))]
    return {p for p in paths
            if not any(len(q) > len(p) and set(p) <= set(q) for q in paths)}


@pytest.mark.parametrize("seed", range(12))
def test_maximal_paths_equal_a_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    nodes = [f"n{i}" for i in range(int(rng.integers(3, 7)))]
    edges = [Edge(a, b, "xNext", "t") for a in nodes for b in nodes
             if a != b and rng.random() < 0.35]
    sources = list(rng.choice(nodes, size=2, replace=False))
    found = maximal_paths(edges, sources)
    assert {tuple(p) for p in found} == _brute_force_maximal(edges, set(sources))
    assert [len(p) for p in found] == sorted((len(p) for p in found), reverse=True)


def test_cleaning_and_rendering():
    edges = [Edge("cook rice", "eat together", "xNext", "meals"),
             Edge("cook rice", "eat together", "oNext", "festivals"),   # same pair elsewhere
             Edge("eat together", "cook rice", "xNeed", "meals"),       # its reverse
             Edge("wash hands", "wash hands", "xNeed", "meals"),
             Edge("xNext", "pray", "xNext", "meals"),
             Edge("eat together", "wash dishes", "oNext", "meals")]
    kept, dropped = clean_edges(edges)
    assert kept == [edges[0], edges[5]]
    assert dropped == {"duplicate": 1, "self_loop": 1, "relation_as_node": 1, "reversed_pair": 1}
    path = maximal_paths(kept, ["cook rice"])[0]
    assert render(path, relations_along(kept, path)) == (
        "cook rice---xNext--->eat together\neat together---oNext--->wash dishes")
    assert render(path) == "- cook rice → eat together\n- eat together → wash dishes"


GOOD = {"action": "visit elders at New Year", "knowledge": "receive red envelopes",
        "relation_type": "oNext", "result": "If you visit elders, then they give red envelopes."}


def test_json_replies_are_read_and_malformed_ones_repaired():
    clean = parse_generation("Here you go:\n" + json.dumps([GOOD, GOOD]) + "\nHope it helps")
    assert clean.records == [GOOD, GOOD] and clean.repaired == 0
    broken = ("[{'action': 'bow to guests', 'knowledge': 'guests bow back', "
              "'relation_type': 'oNext', 'result': \"If you bow, then they bow back.\"},\n"
              '{action: "take off shoes", knowledge: "wear slippers", relation_type: "xNext", '
              'result: "If you take off shoes, then you wear slippers.",},\n'
              '{"action": "pour tea", "knowledge": "tap the table", "relation_type": "oReact", '
              '"result": "If someone pours tea, then you tap the table."},\n'
              '{"action": "eat noodles", "knowledge": "slurp", "relation_type": "xNext"},\n'
              '{"action": "give a gift", "knowledge": "refuse twice", "relation_type": "oNext", '
              '"result": "If you give a gift, then they refuse twice')
    parsed = parse_generation(broken)
    assert [r["action"] for r in parsed.records] == ["bow to guests", "take off shoes",
                                                     "give a gift"]
    assert parsed.records[2]["result"] == "If you give a gift, then they refuse twice"
    assert parsed.dropped == {"unknown relation": 1, "missing field": 1}
    assert parsed.repaired == 3
    assert parse_generation("I cannot help with that.").records == []
    assert repair_object("{no pairs here}") is None


def test_expansion_replies_split_intermediate_and_next_steps():
    step = {"action": "buy mooncakes", "knowledge": "share them", "relation_type": "xNext",
            "event": "If you buy mooncakes, then you share them."}
    whole = json.dumps({"intermediate_steps": [step], "next_steps": [step, step]})
    middle, following = parse_expansion(whole)
    assert (len(middle.records), len(following.records)) == (1, 2)
    broken = whole.replace('"next_steps"', "next_steps").replace("}]}", "},]}")[:-1]
    middle, following = parse_expansion("Sure! " + broken)
    assert (len(middle.records), len(following.records)) == (1, 2)


def _reference(st, path, max_length: int):
    """sentence-transformers' mean-pooled, normalised encoder (all-MiniLM-L6-v2's modules)."""
    try:
        from sentence_transformers import models
    except ImportError:   # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules as models
    transformer = models.Transformer(str(path), max_seq_length=max_length)
    width = transformer.auto_model.config.hidden_size
    return st.SentenceTransformer(modules=[transformer, models.Pooling(width, "mean"),
                                           models.Normalize()], device="cpu")


def test_sentence_embeddings_equal_sentence_transformers(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    import torch
    import transformers

    from jaxcult.hub.pretrained import load_pretrained

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48)
    transformers.BertModel(config).eval().save_pretrained(tmp_path / "bert")
    texts = ["If you visit elders, they give red envelopes", "bow", "a b c d e f g h i j k"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *sorted({w.lower() for t in texts
                                                          for w in t.split()})]
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(tmp_path / "bert" / "vocab.txt")).save_pretrained(
        tmp_path / "bert")
    reference = _reference(st, tmp_path / "bert", 8)
    ours = SentenceEncoder(*load_pretrained(tmp_path / "bert"), max_length=8, batch_size=2)
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


@needs_minilm
@pytest.mark.slow   # the tiny random BERT case stays in the default run
def test_minilm_embeddings_equal_sentence_transformers():
    """all-MiniLM-L6-v2, the official merging encoder for English, on assertion-like texts."""
    st = pytest.importorskip("sentence_transformers")
    from jaxcult import assets

    texts = ["If you visit elders at New Year, then they give you red envelopes.",
             "receive red envelopes", "Before a wedding, families exchange gifts.", "bow"]
    reference = _reference(st, assets.get_asset("minilm-l6").path(), 256)
    ours = SentenceEncoder.load("minilm-l6")
    np.testing.assert_allclose(ours.encode(texts), reference.encode(texts), atol=1e-5)


def test_retrieval_equals_a_brute_force_cosine_ranking():
    rng = np.random.default_rng(0)
    queries, corpus = rng.normal(size=(4, 6)), rng.normal(size=(9, 6))
    corpus[5] = corpus[2] * 3            # the same direction: a tie, the lower index first
    found = top_k(queries, corpus, 3)
    for query, picked in zip(queries, found):
        scores = [float(query @ c / np.linalg.norm(query) / np.linalg.norm(c)) for c in corpus]
        ranked = sorted(range(len(corpus)), key=lambda j: (-round(scores[j], 12), j))
        assert picked == ranked[:3]
    np.testing.assert_allclose(cosine_matrix(queries, corpus)[0, 2], cosine_matrix(
        queries, corpus)[0, 5])


class ScriptedTeacher:
    """Answers generation and expansion prompts from a script keyed by what they ask about."""

    name = "scripted"

    def __init__(self):
        self.asked = []

    def reply(self, chats, config, stream=0, prefix=""):
        from jaxcult.generation.chat import Reply

        answers = []
        for chat in chats:
            text = chat[-1]["content"]
            self.asked.append(text)
            if "Answer with a JSON array" in text:
                answers.append(GENERATED["tea" if "about tea" in text else "moon"])
            else:
                answers.append(EXPANDED[next(k for k in EXPANDED if f"action: {k};" in text)])
        return [Reply(a) for a in answers]


def _step(action, knowledge, relation="xNext", key="event"):
    return {"action": action, "knowledge": knowledge, "relation_type": relation,
            key: f"If {action}, then {knowledge}."}


GENERATED = {
    "moon": json.dumps([_step("buy mooncakes", "share mooncakes with family", key="result"),
                        _step("buy mooncakes", "feel festive", "xEffect", key="result")]),
    "tea": "Sorry, I cannot list those.",
}
EXPANDED = {
    "buy mooncakes": json.dumps({
        "intermediate_steps": [_step("buy mooncakes", "carry mooncakes home")],
        "next_steps": [_step("share mooncakes with family", "admire the moon"),
                       _step("share mooncakes with family", "feel festive", "oEffect")]}),
    "share mooncakes with family": "{'intermediate_steps': [], next_steps: [" + json.dumps(
        _step("admire the moon", "buy the mooncakes")) + ",]}",
}


class WordsEncoder:
    """Bag-of-words embeddings: texts sharing most words are close (cosine > 0.8)."""

    words = sorted(set(re.findall(r"\w+", " ".join([*GENERATED.values(), *EXPANDED.values()])
                                  .lower())))

    def encode(self, texts):
        vectors = np.array([[float(w in t.lower().split()) for w in self.words] for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def cckg_config(tmp_path):
    import yaml

    config = tmp_path / "cckg.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "cultures": [{"country": "China", "subtopics": ["moon festival", "tea"]}],
        "generate": {"teacher": "scripted", "prompts_per_batch": 1},
        "expand": {"rounds": 2, "english_encoder": {"model": "words"}}}))
    return config


def _run(stage, config, out, overrides=()):
    from jaxcult.recipes.cckg import RECIPE
    from jaxcult.recipes.runner import run_recipe

    teacher = ScriptedTeacher()
    facts = run_recipe(RECIPE, stage, config, list(overrides), out,
                       chats={"scripted": teacher}, encoders={"words": WordsEncoder()})
    return facts, teacher


def test_stages_generate_expand_merge_and_chain(cckg_config, tmp_path):
    out = tmp_path / "out"
    facts, teacher = _run("run", cckg_config, out)
    generated = facts["generate"]
    assert (generated["replies"], generated["assertions"], generated["unparsable"]) == (2, 2, 1)
    assert facts["expand"]["round_0"]["replies"] == 1          # the one xNext assertion
    assert facts["expand"]["round_1"]["replies"] == 1          # "admire the moon", unmatched
    assertions = [json.loads(x) for x in (out / "assertions.jsonl").read_text().splitlines()]
    edges = {(a["action"], a["knowledge"]) for a in assertions}
    assert ("share mooncakes with family", "feel festive") in edges   # merged onto a known node
    assert ("admire the moon", "buy mooncakes") in edges              # "buy the mooncakes" merged
    merged = next(a for a in assertions if a["action"] == "admire the moon")
    assert merged["merged_from"] == "buy the mooncakes" and merged["round"] == 1
    paths = [json.loads(x) for x in (out / "paths.jsonl").read_text().splitlines()]
    chains = {tuple(p["nodes"]) for p in paths}
    assert ("buy mooncakes", "share mooncakes with family", "admire the moon") in chains
    longest = next(p for p in paths if p["nodes"][-1] == "admire the moon")
    assert longest["with_relations"].splitlines()[0] == (
        "buy mooncakes---xNext--->share mooncakes with family")
    assert facts["paths"]["China/English"]["paths"] == len(paths)
    assert len(teacher.asked) == 4                           # 2 generations + 2 expansions
    _, again = _run("run", cckg_config, out)                 # everything done: nothing asked
    assert again.asked == []


def test_a_killed_generation_resumes_and_changed_settings_are_refused(cckg_config, tmp_path):
    from jaxcult.errors import UserError

    out = tmp_path / "out"
    _run("generate", cckg_config, out)
    whole = (out / "generation.jsonl").read_text()
    first = whole.splitlines(keepends=True)[0]
    (out / "generation.jsonl").write_text(first + whole[len(first):len(first) + 30])  # torn
    _, teacher = _run("generate", cckg_config, out)
    assert (out / "generation.jsonl").read_text() == whole and len(teacher.asked) == 1
    with pytest.raises(UserError, match="generation differ"):
        _run("generate", cckg_config, out, ["generate.generation.temperature=0.5"])
    with pytest.raises(UserError, match="run `jaxcult cckg expand` first"):
        _run("paths", cckg_config, out)


def test_bad_configs_are_one_line_with_exit_2(tmp_path, capsys):
    import yaml

    from jaxcult.cli import main

    config = tmp_path / "cckg.yaml"
    for cultures, message in (
            ([{"country": "Japan", "subtopics": ["tea", "tea"]}], "lists a subtopic twice"),
            ([{"country": "Japan", "subtopics": ["tea"]}] * 2, "listed twice"),
            ([{"country": "Japan", "subtopics": []}], "subtopics")):
        config.write_text(yaml.safe_dump({"cultures": cultures}))
        assert main(["cckg", "generate", str(config), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_nothing_to_expand_still_finishes_every_stage(cckg_config, tmp_path):
    facts, _ = _run("run", cckg_config, tmp_path / "out", ["cultures=[{country: China, "
                                                              "subtopics: [tea]}]"])
    assert facts["generate"]["unparsable"] == 1 and facts["expand"]["round_0"] == {"replies": 0}
    assert facts["paths"]["China/English"]["paths"] == 0
    assert (tmp_path / "out" / "paths.jsonl").read_text() == ""


def test_an_encoder_no_graph_uses_is_refused(tmp_path):
    from pydantic import ValidationError

    from jaxcult.recipes.cckg.config import CckgConfig

    with pytest.raises(ValidationError, match="expand.native_encoder has no effect here"):
        CckgConfig(cultures=[{"country": "Japan", "subtopics": ["tea"]}],
                   expand={"native_encoder": {"model": "other"}})
    CckgConfig(cultures=[{"country": "Japan", "language": "Japanese", "subtopics": ["茶道"]}],
               expand={"native_encoder": {"model": "other"}})


class HashedWordsEncoder:
    """Bag-of-words embeddings over hashed words (any text gets a non-zero vector)."""

    def encode(self, texts):
        vectors = np.zeros((len(texts), 64))
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()) + ["<bias>"]:
                vectors[row, int.from_bytes(word.encode(), "little") % 64] += 1.0
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


QUESTIONS = [
    {"question": "At the Mid-Autumn festival, a family in China", "options":
     ["shares mooncakes", "dyes eggs", "carves pumpkins"], "answer": "A"},
    {"question": "After buying mooncakes, people", "options":
     ["C. throw them away", "B. share them with family", "admire the moon"], "answer": 1},
    {"question": "When guests arrive for tea, the host", "options": ["pours tea", "sings"],
     "answer": "a"},
]


OPTIONS_READ = [("shares mooncakes", "dyes eggs", "carves pumpkins"),
                ("C. throw them away", "share them with family", "admire the moon"),
                ("pours tea", "sings")]


def _transformers_logprob(hf, tokenizer, prompt, continuation):
    import torch

    from jaxcult.generation.scoring import split_tokens

    context, ending = split_tokens(tokenizer, prompt, continuation, False)
    ids = torch.tensor([context + ending])
    with torch.no_grad():
        logprobs = torch.log_softmax(hf(ids).logits[0, :-1].float(), -1)
    return sum(logprobs[len(context) - 1 + i, t].item() for i, t in enumerate(ending))


@pytest.mark.parametrize("scoring", ["letter", "option"])
def test_evaluation_scores_options_as_transformers_and_retrieves_by_cosine(
        cckg_config, tmp_path, tiny_chat_model, scoring):
    import yaml

    from jaxcult.eval.sentence_embeddings import top_k
    from jaxcult.recipes.cckg import prompting
    from jaxcult.recipes.cckg.benchmarks import Question
    from jaxcult.recipes.cckg.evaluate import slug

    folder, hf, tokenizer = tiny_chat_model
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    config = yaml.safe_load(cckg_config.read_text())
    small = {"batch_size": 4, "length_buckets": [512, 1024], "max_new_tokens": 6}
    config["evaluate"] = {
        "models": [str(folder)], "assertions": 2, "retriever": {"model": "hashed"},
        "scoring": scoring,
        "benchmarks": [{"name": "tiny", "file": str(questions), "country": "China"}],
        "conditions": ["none", "cot", "assertions", "path"], "graphs": ["English", "native"],
        "scoring_batches": {"batch_size": 4, "length_buckets": [512, 1024]},
        "cot_generation": small,
        "stories": {"topics": {"China": ["moon festival"]}, "judge": str(folder),
                    "generation": small, "judge_generation": small}}
    cckg_config.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    from jaxcult.recipes.cckg import RECIPE
    from jaxcult.recipes.runner import run_recipe

    encoders = {"words": WordsEncoder(), "hashed": HashedWordsEncoder()}
    facts = run_recipe(RECIPE, "run", cckg_config, [], out,
                       chats={"scripted": ScriptedTeacher()}, encoders=encoders)
    asked = facts["evaluate"]["multiple_choice"]["tiny"]
    assert asked["conditions"] == ["none", "cot", "assertions:English", "path:English"]
    assert asked["without_graph"] == ["assertions:native", "path:native"]
    answers = out / "evaluate" / "tiny" / f"{slug(str(folder))}.jsonl"
    records = [json.loads(x) for x in answers.read_text().splitlines()]
    assert len(records) == 4 * 3
    assertions = [json.loads(x)["sentence"] for x in (out / "assertions.jsonl").read_text()
                  .splitlines()]
    encoder = HashedWordsEncoder()
    for record in records:
        source = QUESTIONS[record["number"]]
        options = OPTIONS_READ[record["number"]]      # an option's own letter is dropped
        question = Question("tiny", record["number"], "", source["question"], options, 0)
        assert record["answer"] == [0, 1, 0][record["number"]]
        if record["condition"] == "assertions:English":
            ranked = top_k(encoder.encode([source["question"]]), encoder.encode(assertions), 2)[0]
            assert record["knowledge"] == [assertions[i] for i in ranked]
        unit = record["condition"].split(":")[0]
        chat = prompting.question_chat(question, scoring, prompting.knowledge_block(
            unit, "China", record["knowledge"]), record["condition"] == "cot")
        prompt, options = prompting.scored(question, scoring, prompting.render(chat, tokenizer),
                                           record["reasoning"])
        expected = [_transformers_logprob(hf, tokenizer, prompt, c) for c in options]
        np.testing.assert_allclose(record["logprobs"], expected, atol=2e-5)
        assert record["predicted"] == int(np.argmax(expected))
    report = json.loads((out / "evaluate" / "report.json").read_text())
    rows = {r["condition"]: r for r in report["multiple_choice"]}
    assert rows["none"]["questions"] == 3
    compared = {(c["a"], c["b"]): c for c in report["multiple_choice_comparisons"]}
    assert set(compared) == {("none", "cot"), ("none", "assertions:English"),
                             ("none", "path:English")}
    assert compared["none", "cot"]["difference"] == pytest.approx(
        rows["cot"]["accuracy"] - rows["none"]["accuracy"], abs=1e-3)
    ratings = (out / "evaluate" / "stories" / f"{slug(str(folder))}.ratings.jsonl").read_text()
    assert len(ratings.splitlines()) == 3          # none, assertions, path
    assert {r["condition"] for r in report["stories"]} == {"none", "assertions:English",
                                                           "path:English"}
    whole = answers.read_text()                    # killed while writing the second batch
    answers.write_text(whole[:whole.index("\n") + 1] + whole[whole.index("\n") + 1:][:40])
    run_recipe(RECIPE, "evaluate", cckg_config, [], out, encoders=encoders)
    assert answers.read_text() == whole
    from jaxcult.errors import UserError

    other = "option" if scoring == "letter" else "letter"
    with pytest.raises(UserError, match="scoring differ"):
        run_recipe(RECIPE, "evaluate", cckg_config, [f"evaluate.scoring={other}"], out,
                   encoders=encoders)


def test_benchmark_layouts_are_read_and_bad_rows_named(tmp_path):
    import csv

    from jaxcult.errors import UserError
    from jaxcult.recipes.cckg.benchmarks import LAYOUTS, Layout, read_questions

    indo = tmp_path / "indo.csv"
    with indo.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["province", "context", "options", "answer"])
        w.writerow(["Bali", "Before a ceremony, people", "['A. bring offerings', 'B. sleep']", "A"])
        w.writerow(["Aceh", "Guests are", '["A. served coffee", "B. ignored", "C. sent home"]', "c"])
    found, discarded = read_questions("indo", indo, LAYOUTS["indoculture"])
    assert [(q.question, q.options, q.answer) for q in found] == [
        ("Before a ceremony, people", ("bring offerings", "sleep"), 0),
        ("Guests are", ("served coffee", "ignored", "sent home"), 2)] and discarded == 0
    arab = tmp_path / "arab.jsonl"
    rows = [{"first_statement": "At iftar, families", "should_discard": "No",
             "options": {"arabic_keys": ["أ", "ب"], "text": ["eat dates", "fast"]},
             "answer_key": {"arabic_answer_key": "أ", "english_answer_key": "A"}},
            {"first_statement": "x", "should_discard": "Yes", "options": {}, "answer_key": {}}]
    arab.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    found, discarded = read_questions("arab", arab, LAYOUTS["arabculture"])
    assert [(q.options, q.answer) for q in found] == [(("eat dates", "fast"), 0)] and discarded == 1
    for row, message in (({"context": "q", "options": "['a', 'b']", "answer": "D"},
                          r"row 1: answer 'D' is neither a letter among AB"),
                         ({"context": "q", "options": "only one", "answer": "A"},
                          "must be a list of at least two"),
                         ({"question": "q", "options": "['a', 'b']", "answer": "A"},
                          "no column 'context'")):
        bad = tmp_path / "bad.csv"
        with bad.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerow(row)
        with pytest.raises(UserError, match=message):
            read_questions("bad", bad, LAYOUTS["indoculture"])
    with pytest.raises(UserError, match="arab.jsonl:2: column 'options' has no key 'text'"):
        read_questions("arab", arab, Layout("first_statement", "options.text",
                                            "answer_key.english_answer_key"))
    with pytest.raises(UserError, match="not found"):
        read_questions("none", tmp_path / "missing.csv", LAYOUTS["jaxcult"])


def test_recorded_replies_stand_in_for_the_teacher(cckg_config, tmp_path):
    import yaml

    from jaxcult.errors import UserError
    from jaxcult.recipes.cckg import RECIPE
    from jaxcult.recipes.runner import run_recipe

    recorded = tmp_path / "recorded.jsonl"
    lines = [{"stage": "generate", "key": ["China", "English", "moon festival"],
              "reply": GENERATED["moon"]},
             {"stage": "generate", "key": ["China", "English", "tea"], "reply": GENERATED["tea"]}]
    recorded.write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = yaml.safe_load(cckg_config.read_text())
    config["generate"] = {"recorded": str(recorded)}
    cckg_config.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    facts = run_recipe(RECIPE, "generate", cckg_config, [], out,
                       encoders={"words": WordsEncoder()})
    assert facts["generate"]["assertions"] == 2
    with pytest.raises(UserError, match=r"no expand reply for key \['China', 'English', "
                                        r"'moon festival', 'buy mooncakes'"):
        run_recipe(RECIPE, "expand", cckg_config, [], out, encoders={"words": WordsEncoder()})
    recorded.write_text(recorded.read_text() + "not json\n")
    with pytest.raises(UserError, match=r"recorded.jsonl:3: invalid JSON"):
        run_recipe(RECIPE, "generate", cckg_config, [], tmp_path / "other")
    with pytest.raises(ValueError, match="generate.teacher has no effect here"):
        from jaxcult.recipes.cckg.config import CckgConfig

        CckgConfig(cultures=config["cultures"], generate={"recorded": "r.jsonl",
                                                         "teacher": "other"})


def test_evaluation_configs_are_checked(tmp_path):
    from pydantic import ValidationError

    from jaxcult.recipes.cckg.config import CckgConfig

    cultures = [{"country": "Japan", "subtopics": ["tea"]}]
    bench = {"name": "b", "file": "b.csv", "country": "Japan"}
    for evaluate, message in (
            ({"benchmarks": [{**bench, "country": "Peru"}]}, "country 'Peru' has no graph"),
            ({"benchmarks": [bench], "conditions": ["none", "adapter"]}, "needs an `adapt`"),
            ({}, "give benchmarks, stories or both"),
            ({"benchmarks": [bench], "conditions": ["none", "cot"], "assertions": 3},
             "evaluate.assertions has no effect here"),
            ({"benchmarks": [bench, bench]}, "a name is used twice"),
            ({"benchmarks": [bench], "graphs": ["Englsh"]}, "'Englsh' is neither English"),
            ({"benchmarks": [bench], "scoring_batches": {"max_new_tokens": 4}},
             "max_new_tokens"),
            ({"benchmarks": [bench], "conditions": ["none"], "cot_generation": {
                "max_new_tokens": 8}}, "evaluate.cot_generation has no effect")):
        with pytest.raises(ValidationError, match=message):
            CckgConfig(cultures=cultures, evaluate=evaluate)


def test_adapter_items_split_and_fisher_traces(tmp_path):
    from types import SimpleNamespace

    from jaxcult.errors import UserError
    from jaxcult.recipes.cckg.adapt import fisher_traces, held_out, items, narrative
    from jaxcult.recipes.cckg.config import AdaptConfig

    out = tmp_path / "out"
    out.mkdir()
    row = {"country": "Japan", "language": "English", "subtopic": "New Year"}
    (out / "assertions.jsonl").write_text("".join(json.dumps({**row, **a}) + "\n" for a in (
        {"action": "the year ends", "knowledge": "families clean the house", "relation": "xNext"},
        {"action": "visiting a shrine", "knowledge": "buy a charm", "relation": "xNeed"},
        {**row, "language": "Japanese", "action": "x", "knowledge": "y", "relation": "xNext"})))
    (out / "paths.jsonl").write_text(json.dumps({**row, "nodes": ["the year ends", "clean the "
                                                 "house", "eat soba."]}) + "\n")
    graphs = SimpleNamespace(out=out, config=SimpleNamespace(adapt=AdaptConfig(
        train={"config": "t.yaml"})))
    made = items(graphs, "Japan", "English")
    assert [m["messages"][0]["content"] for m in made] == [
        "In Japan: If the year ends, what does the person usually do next?",
        "In Japan: What does a person need to do first, before visiting a shrine?",
        "How does New Year usually unfold in Japan?"]
    assert made[2]["messages"][1]["content"] == narrative(
        ["the year ends", "clean the house", "eat soba."]) == (
        "First, the year ends. Then, clean the house. Then, eat soba.")
    shares = [held_out({"n": i}, 0.25) for i in range(400)]
    assert 0.18 < sum(shares) / 400 < 0.32 and shares == [held_out({"n": i}, 0.25)
                                                          for i in range(400)]
    run = tmp_path / "run"
    run.mkdir()
    (run / "fisher.jsonl").write_text(json.dumps({"step": 0, "estimator": "sampled", "trace": {
        "lora/layer_0": 1.0, "lora/layer_1": 3.0}}) + "\n" + json.dumps({
            "step": 8, "estimator": "sampled", "trace": {"lora/layer_0": 5.0, "lora/layer_1": 2.0}})
        + "\n")
    assert list(fisher_traces(run).items()) == [("lora/layer_0", 5.0), ("lora/layer_1", 2.0)]
    (run / "fisher.jsonl").write_text("")
    with pytest.raises(UserError, match="no Fisher traces"):
        fisher_traces(run)


def test_report_pairs_each_condition_with_none_native_with_english_adapter_with_retrieval():
    from jaxcult.recipes.cckg.report import _pairs

    assert _pairs(["none", "cot", "assertions:English", "assertions:Indonesian", "path:English",
                   "adapter"]) == [
        ("none", "cot"), ("none", "assertions:English"), ("none", "assertions:Indonesian"),
        ("none", "path:English"), ("none", "adapter"),
        ("assertions:English", "assertions:Indonesian"),
        ("assertions:English", "adapter"), ("assertions:Indonesian", "adapter"),
        ("path:English", "adapter")]


@pytest.mark.slow   # ~8 min on 2 cores
def test_the_offline_demo_runs_every_stage(tmp_path):
    from pathlib import Path

    from jaxcult.cli import main

    for name in ("smollm2-135m-instruct", "minilm-l6", "multilingual-e5-small"):
        require_asset(name)
    demo = Path(__file__).resolve().parent.parent / "experiments" / "cckg" / "demo.yaml"
    out = tmp_path / "demo"
    assert main(["cckg", "run", str(demo), "--out", str(out)]) == 0
    report = json.loads((out / "evaluate" / "report.json").read_text())
    conditions = {(r["benchmark"], r["condition"]) for r in report["multiple_choice"]}
    assert ("indonesia", "assertions:Indonesian") in conditions
    assert ("egypt", "adapter") in conditions and ("japan", "cot") in conditions
    assert all(r["questions"] == 7 for r in report["multiple_choice"])
    assert {r["condition"] for r in report["stories"]} >= {"none", "path:English", "adapter"}
    fisher = json.loads((out / "adapt" / "fisher.json").read_text())
    assert set(fisher) == {"Indonesia", "Japan", "Egypt"} and len(fisher["Japan"]) == 30


def test_adapters_train_on_the_graph_and_answer_as_a_condition(cckg_config, tmp_path,
                                                                tiny_chat_model):
    import yaml

    from jaxcult.errors import UserError
    from jaxcult.recipes.cckg import RECIPE
    from jaxcult.recipes.runner import run_recipe

    folder, _, _ = tiny_chat_model
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS[:2]))
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({
        "task": {"name": "causal_lm"}, "data": {"name": "chat_jsonl", "length_buckets": [256]},
        "model": {"name": str(folder), "max_length": 256},
        "peft": {"kind": "lora", "lora_r": 2, "target_modules": ["q", "v"]},
        "fisher": {"track_every": 2, "num_batches": 1, "batch_size": 2},
        "trainer": {"steps": 2, "batch_size": 2, "eval_batch_size": 2, "log_every": 1},
        "checkpoint": {"every": 0}, "logging": {"tensorboard": False}}))
    config = yaml.safe_load(cckg_config.read_text())
    small = {"batch_size": 2, "length_buckets": [512]}
    config["adapt"] = {"train": {"config": str(train)}, "held_out_share": 0.4}
    config["evaluate"] = {"models": [str(folder)], "conditions": ["none", "adapter"],
                          "scoring_batches": small, "benchmarks": [
                              {"name": "tiny", "file": str(questions), "country": "China"}]}
    cckg_config.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    encoders = {"words": WordsEncoder()}
    facts = run_recipe(RECIPE, "run", cckg_config, [], out, chats={"scripted": ScriptedTeacher()},
                       encoders=encoders)
    adapted = facts["adapt"]["China"]
    assert adapted["train_items"] + adapted["validation_items"] == 6 + 3   # assertions + paths
    assert len(json.loads((out / "adapt" / "fisher.json").read_text())["China"]) == 2
    report = json.loads((out / "evaluate" / "report.json").read_text())
    assert {r["condition"] for r in report["multiple_choice"]} == {"none", "adapter"}
    assert [(c["a"], c["b"]) for c in report["multiple_choice_comparisons"]] == [
        ("none", "adapter")]
    with pytest.raises(UserError, match="which evaluate.models does not list"):
        run_recipe(RECIPE, "evaluate", cckg_config, ["evaluate.models=[other]"], out,
                   encoders=encoders)
    with pytest.raises(UserError, match="a finished run with another config"):
        run_recipe(RECIPE, "adapt", cckg_config, ["adapt.train.overrides=[optimizer.lr=0.5]"],
                   out, encoders=encoders)
    (out / "adapt" / "adapters" / "China" / "peft" / "adapter_model.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="adapters differ"):    # retrained: answers are stale
        run_recipe(RECIPE, "evaluate", cckg_config, [], out, encoders=encoders)


def test_an_encoders_own_threshold_decides_its_merges(cckg_config, tmp_path):
    _run("run", cckg_config, tmp_path / "paper")
    _run("run", cckg_config, tmp_path / "strict", ["expand.english_encoder.threshold=0.9"])

    def merged(out):
        return {(a["merged_from"], a["knowledge"]) for a in map(json.loads, (
            out / "assertions.jsonl").read_text().splitlines()) if "merged_from" in a}

    assert ("buy the mooncakes", "buy mooncakes") in merged(tmp_path / "paper")   # cosine 0.816
    assert ("buy the mooncakes", "buy mooncakes") not in merged(tmp_path / "strict")
