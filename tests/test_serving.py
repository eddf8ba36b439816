"""`jaxcult serve` through the official `openai` client: chat, completion, streaming, logprobs
(against transformers), batching of concurrent requests, adapters by name, and the API's error
shape for malformed requests. The server runs in a thread on a tiny random Llama."""

from __future__ import annotations

import copy
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation import generate

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")

CONFIG = GenerationConfig(max_new_tokens=12, batch_size=4, length_buckets=[64, 128], chunk=4)
CHATS = [[{"role": "user", "content": "Hello there"}],
         [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}],
         [{"role": "user", "content": "A longer question about tea and biscuits"}]]


class Running:
    """A `jaxcult serve` app on a free local port, in a daemon thread."""

    def __init__(self, models: dict, config: GenerationConfig, defaults: dict | None = None
                 ) -> None:
        import uvicorn

        from jaxcult.run.serve import bind
        from jaxcult.serving.app import Server
        from jaxcult.serving.scheduler import Scheduler

        self.scheduler = Scheduler(models, config)
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self.server = uvicorn.Server(uvicorn.Config(Server(self.scheduler, defaults).app(),
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.scheduler.close()

    def client(self):
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0)

    def post(self, route: str, body: bytes | dict) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/{route}", data,
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def tiny(tiny_chat_model):
    from jaxcult.run.generate import load_generation_model

    root, hf, _ = tiny_chat_model
    model, tokenizer = load_generation_model(str(root), None, merge=False)
    return root, hf, model, tokenizer


@pytest.fixture(scope="module")
def served(tiny):
    _, _, model, tokenizer = tiny
    running = Running({"tiny": (model, tokenizer)}, CONFIG)
    yield running
    running.stop()


def test_greedy_chat_and_completion_equal_generate_and_streams_join_to_the_same(served, tiny):
    _, _, model, tokenizer = tiny
    client = served.client()
    expected = [c.text for c in generate(model, tokenizer, CHATS, CONFIG)]
    replies = [client.chat.completions.create(model="tiny", messages=chat, temperature=0,
                                              max_tokens=12) for chat in CHATS]
    assert [r.choices[0].message.content for r in replies] == expected
    assert all(r.usage.completion_tokens > 0 for r in replies)

    streamed = client.chat.completions.create(model="tiny", messages=CHATS[2], temperature=0,
                                              max_tokens=12, stream=True,
                                              stream_options={"include_usage": True})
    chunks = list(streamed)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(pieces) == expected[2] and sum(bool(p) for p in pieces) >= 2
    assert chunks[-1].usage.completion_tokens == replies[2].usage.completion_tokens

    prompts = ["Once upon a time", "The tea was"]
    plain = [c.text for c in generate(model, tokenizer, prompts, CONFIG)]
    completion = client.completions.create(model="tiny", prompt=prompts, temperature=0,
                                           max_tokens=12)
    assert [c.text for c in completion.choices] == plain
    stream = client.completions.create(model="tiny", prompt=prompts[0], temperature=0,
                                       max_tokens=12, stream=True)
    assert "".join(c.choices[0].text for c in stream) == plain[0]
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_logprobs_are_the_models_own_and_equal_transformers(served, tiny):
    _, hf, model, tokenizer = tiny
    client = served.client()
    reply = client.chat.completions.create(model="tiny", messages=CHATS[0], temperature=0,
                                           max_tokens=6, logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    entries = choice.logprobs.content
    prompt = tokenizer.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    new = generate(model, tokenizer, CHATS[:1], CONFIG)[0].token_ids[:len(entries)]
    assert [e.token for e in entries] == [tokenizer.decode([t]) for t in new]
    with torch.no_grad():
        logits = hf(torch.tensor([ids + new])).logits[0, len(ids) - 1:-1]
    reference = torch.log_softmax(logits.double(), -1).numpy()
    ours = np.array([e.logprob for e in entries])
    np.testing.assert_allclose(ours, reference[np.arange(len(new)), new], atol=2e-4)
    for step, entry in enumerate(entries):
        assert len(entry.top_logprobs) == 3 and entry.top_logprobs[0].logprob == entry.logprob
        best = np.sort(reference[step])[::-1][:3]
        np.testing.assert_allclose([t.logprob for t in entry.top_logprobs], best, atol=2e-4)

    legacy = client.completions.create(model="tiny", prompt="Tea", temperature=0, max_tokens=4,
                                       logprobs=2).choices[0].logprobs
    assert len(legacy.tokens) == len(legacy.token_logprobs) == len(legacy.top_logprobs) == 4
    # keyed by text: two byte tokens that decode alike share a key, as in the API
    assert legacy.text_offset[0] == 0 and all(1 <= len(t) <= 2 for t in legacy.top_logprobs)


def test_concurrent_requests_share_batches_and_keep_their_own_limits(served, tiny):
    _, _, model, tokenizer = tiny
    client = served.client()
    before = len(served.scheduler.batch_sizes)
    limits = [3, 12, 7, 12, 5, 9, 12, 4]
    chats = [CHATS[i % 3] for i in range(len(limits))]

    def ask(i):
        return client.chat.completions.create(model="tiny", messages=chats[i], temperature=0,
                                              max_tokens=limits[i])

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(ask, range(len(limits))))
    sizes = served.scheduler.batch_sizes[before:]
    assert sum(sizes) == len(limits) and max(sizes) > 1   # batched, never more than batch_size
    assert max(sizes) <= CONFIG.batch_size
    for chat, limit, reply in zip(chats, limits, replies):
        alone = generate(model, tokenizer, [chat], CONFIG.model_copy(update={"max_new_tokens": limit}))
        assert reply.choices[0].message.content == alone[0].text
        assert reply.usage.completion_tokens == len(alone[0].token_ids) <= limit


def test_a_seeded_sample_is_reproducible_and_stop_strings_cut(served):
    client = served.client()
    ask = dict(model="tiny", messages=CHATS[0], temperature=0.9, top_p=0.9, max_tokens=12)
    first, again = (client.chat.completions.create(seed=7, **ask) for _ in range(2))
    assert first.choices[0].message.content == again.choices[0].message.content
    text = client.chat.completions.create(model="tiny", messages=CHATS[0], temperature=0,
                                          max_tokens=12).choices[0].message.content
    stop = text[3:5]
    cut = client.chat.completions.create(model="tiny", messages=CHATS[0], temperature=0,
                                         max_tokens=12, stop=[stop]).choices[0]
    assert cut.message.content == text[:text.find(stop)] and cut.finish_reason == "stop"


@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    ({"model": "tiny"}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}, 400,
     "frobnicate"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 99}, 400,
     "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x" * 300}]}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, 400,
     "temperature"),
    ({"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, 400,
     "top_logprobs"),
])
def test_malformed_requests_get_the_apis_error_shape_and_the_server_lives(served, body, status,
                                                                           param):
    code, answer = served.post("chat/completions", body)
    assert code == status
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param and answer["error"]["message"]
    code, _ = served.post("completions", {"model": "tiny", "prompt": "ok", "max_tokens": 2,
                                          "temperature": 0})
    assert code == 200


def test_lora_adapters_are_served_by_name_on_shared_base_weights(tiny, tmp_path):
    peft = pytest.importorskip("peft")
    from jaxcult.run.generate import load_generation_model
    from jaxcult.run.serve import load_served_models

    root, hf, base, tokenizer = tiny
    torch.manual_seed(3)
    adapted = peft.get_peft_model(copy.deepcopy(hf), peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.save_pretrained(tmp_path / "polite")
    models = load_served_models(str(root), "tiny", {"polite": tmp_path / "polite"})
    running = Running(models, CONFIG)
    try:
        client = running.client()
        answers = {name: client.chat.completions.create(
            model=name, messages=CHATS[0], temperature=0, max_tokens=12).choices[0].message.content
            for name in ("tiny", "polite")}
    finally:
        running.stop()
    with_adapter, _ = load_generation_model(str(root), str(tmp_path / "polite"), merge=False)
    assert answers["polite"] == generate(with_adapter, tokenizer, CHATS[:1], CONFIG)[0].text
    assert answers["tiny"] == generate(base, tokenizer, CHATS[:1], CONFIG)[0].text
    assert answers["polite"] != answers["tiny"]


def test_the_remote_backend_on_jaxcult_serve_answers_as_the_engine_backend(served, tiny):
    from jaxcult.generation.chat import EngineChatModel
    from jaxcult.remote.chat_model import RemoteChatModel
    from jaxcult.remote.settings import RemoteModel

    _, _, model, tokenizer = tiny
    local = EngineChatModel("tiny", model, tokenizer)
    remote = RemoteChatModel(RemoteModel(endpoint=served.url, model="tiny"), None)
    for prefix in ("", "ACTION:"):
        assert remote.reply(CHATS, CONFIG, prefix=prefix) == local.reply(CHATS, CONFIG, prefix=prefix)


def test_survey_evaluation_through_a_server_equals_the_local_one(tiny, tmp_path):
    from test_survey_eval import write_synthetic_worldvaluesbench

    from jaxcult.run.survey import survey_command

    root, _, model, tokenizer = tiny
    survey = write_synthetic_worldvaluesbench(tmp_path / "wvb", ("China",), respondents=6, seed=3)
    settings = ["length_buckets=[512, 1024]", "batch_size=6", "max_new_tokens=10"]
    config = GenerationConfig(max_new_tokens=10, batch_size=6, length_buckets=[512, 1024])
    running = Running({"tiny": (model, tokenizer)}, config)
    try:
        ask = dict(personas=4, questions=["Q1", "Q7", "Q33"])
        local = survey_command(str(root), survey, ["China"], tmp_path / "local", settings, **ask)
        remote = survey_command("tiny", survey, ["China"], tmp_path / "remote",
                                ["max_new_tokens=10"], endpoint=running.url, **ask)
    finally:
        running.stop()
    # (as JSON: an undefined KL is NaN on both sides)
    assert json.dumps(remote["cultures"]) == json.dumps(local["cultures"])
    assert remote["endpoint"] == running.url
    assert len((tmp_path / "remote" / "remote-cache.jsonl").read_text().splitlines()) == 12
    with pytest.raises(UserError, match="--mode logprob scores every option"):
        survey_command("tiny", survey, ["China"], tmp_path / "x", [], mode="logprob",
                       endpoint=running.url, **ask)


def test_the_remote_pairs_judge_reads_the_local_judges_option_logprobs(served, tiny):
    from jaxcult.generation.scoring import option_logprobs
    from jaxcult.recipes.pairs.config import JudgeConfig
    from jaxcult.recipes.pairs.judges import LogProbJudge, RemoteLogProbJudge
    from jaxcult.remote.chat_model import RemoteChatModel
    from jaxcult.remote.settings import RemoteModel

    _, _, model, tokenizer = tiny
    settings = JudgeConfig(template="{prompt}\n{reply}\n{question}", answer_prefix="Rating:")
    local = LogProbJudge(settings, model, tokenizer)
    remote = RemoteLogProbJudge(settings, RemoteChatModel(RemoteModel(endpoint=served.url,
                                                                      model="tiny"), None))
    items = [({"prompt": "Say hi"}, "Hello!", None), ({"prompt": "Count"}, "1 2 3", None)]
    prompts = [local.prompt(record, reply) for record, reply, _ in items]
    expected = option_logprobs(model, tokenizer, prompts, [local.options] * 2, settings.generation)
    for (record, reply, _), want in zip(items, expected):
        got = remote._option_logprobs(served.post("chat/completions", remote.body(record, reply))[1])
        seen = np.isfinite(got)   # options inside the server's top 20 (the rest: probability 0)
        assert seen.any()
        np.testing.assert_allclose(got[seen], np.asarray(want)[seen], atol=2e-4)
    judged = remote.judge(items)
    assert len(judged) == 2 and all(j.option_mass > 0 for j in judged)


def test_settings_a_request_leaves_unset_come_from_the_models_generation_config(tiny):
    _, _, model, tokenizer = tiny
    running = Running({"tiny": (model, tokenizer)}, CONFIG, {"tiny": {"repetition_penalty": 1.8}})
    try:
        client = running.client()
        ask = dict(model="tiny", messages=CHATS[0], temperature=0, max_tokens=12)
        unset = client.chat.completions.create(**ask).choices[0].message.content
        given = client.chat.completions.create(extra_body={"repetition_penalty": 1.0}, **ask)
    finally:
        running.stop()
    penalised = CONFIG.model_copy(update={"repetition_penalty": 1.8})
    assert unset != given.choices[0].message.content
    assert unset == generate(model, tokenizer, CHATS[:1], penalised)[0].text
    assert given.choices[0].message.content == generate(model, tokenizer, CHATS[:1], CONFIG)[0].text


@pytest.mark.parametrize("args, message", [
    (["--gather-ms", "-1"], "--gather-ms -1.0: must be >= 0"),
    (["seed=3"], "serve: seed is chosen by each request"),
    (["do_sample=true"], "serve: do_sample is chosen by each request"),
    (["batch_size=0"], "batch_size"),
    (["--adapter", "a=x", "--adapter", "a=y"], "--adapter a=y: the name 'a' is taken"),
    (["--port", "BUSY"], "cannot listen"),
])
def test_serve_command_errors_are_one_line_and_exit_2(args, message, capsys):
    import socket

    from jaxcult.cli import main

    with socket.create_server(("127.0.0.1", 0)) as busy:
        args = [str(busy.getsockname()[1]) if a == "BUSY" else a for a in args]
        code = main(["serve", "no-such-model", *args])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1 and message in error[0]
