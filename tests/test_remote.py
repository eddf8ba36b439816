"""The `remote` chat-model backend: request mapping, API key handling, retries with backoff
(429 storms, outages), the response cache that makes resumed stages free, CLCA stages on a
remote model (same records as in process; a server lost mid-stage keeps every finished record),
and its equality with the local backend through `jaxcult serve`."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_clca import Scripted, scripted_everything, write_config

from jaxcult.config import GenerationConfig
from jaxcult.errors import UserError
from jaxcult.generation.chat import STREAM_STRIDE
from jaxcult.recipes.clca import run_stages
from jaxcult.remote.chat_model import RemoteChatModel, chat_body
from jaxcult.remote.client import Client, RemoteUnavailable
from jaxcult.remote.settings import RemoteModel

CHAT = [{"role": "user", "content": "Hi"}]


class FakeApi:
    """An OpenAI-shaped server whose answer to each request is `plan(number, body)`:
    (status, JSON body[, headers]); it records bodies and Authorization headers."""

    def __init__(self, plan) -> None:
        self.plan, self.bodies, self.keys = plan, [], []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with threading.Lock():
                    fake.bodies.append(body)
                    fake.keys.append(self.headers.get("Authorization"))
                    number = len(fake.bodies)
                status, answer, *headers = fake.plan(number, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in (headers[0] if headers else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(text: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]}


def scripted_api(_number, body) -> tuple:
    """The CLCA scripted answers, continuing an answer prefix as a server would."""
    messages = body["messages"]
    if body.get("continue_final_message"):
        prefix, messages = messages[-1]["content"], messages[:-1]
        return 200, answer(scripted_everything(messages).removeprefix(prefix))
    return 200, answer(scripted_everything(messages))


@pytest.fixture
def fake():
    servers = []

    def start(plan):
        servers.append(FakeApi(plan))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def settings(endpoint: str, **extra) -> RemoteModel:
    return RemoteModel(**{"endpoint": endpoint, "model": "teacher", "backoff_s": 0.01,
                          "max_retries": 3, **extra})


def test_requests_map_the_stage_settings_onto_the_api():
    greedy = chat_body("m", CHAT, GenerationConfig(max_new_tokens=9, stop_strings=["\n\n"]), "", None)
    assert greedy == {"model": "m", "messages": CHAT, "max_tokens": 9, "temperature": 0.0,
                      "stop": ["\n\n"]}
    sampled = chat_body("m", CHAT, GenerationConfig(do_sample=True, temperature=0.7, top_p=0.9,
                                                    top_k=5, repetition_penalty=1.1), "ACTION:", 4)
    assert sampled["messages"][-1] == {"role": "assistant", "content": "ACTION:"}
    assert sampled["continue_final_message"] is True and sampled["add_generation_prompt"] is False
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"], sampled["seed"],
            sampled["repetition_penalty"]) == (0.7, 0.9, 5, 4, 1.1)
    assert "min_p" not in sampled


def test_sampled_requests_carry_seeds_of_their_stream_and_the_key_stays_in_the_environment(
        fake, tmp_path, monkeypatch):
    api = fake(lambda n, body: (200, answer(f"reply {n}")))
    monkeypatch.setenv("TEACHER_KEY", "sk-secret")
    model = RemoteChatModel(settings(api.endpoint, api_key_env="TEACHER_KEY"), tmp_path / "c.jsonl")
    config = GenerationConfig(do_sample=True, seed=5)
    replies = model.reply([CHAT, CHAT], config, stream=3, prefix="A:")
    assert sorted(r.text for r in replies) == ["A:reply 1", "A:reply 2"]
    assert sorted(b["seed"] for b in api.bodies) == [5 + 3 * STREAM_STRIDE, 6 + 3 * STREAM_STRIDE]
    assert api.keys == ["Bearer sk-secret"] * 2
    assert "sk-secret" not in (tmp_path / "c.jsonl").read_text()
    monkeypatch.delenv("TEACHER_KEY")
    with pytest.raises(UserError, match="TEACHER_KEY \\(api_key_env\\) is not set"):
        RemoteChatModel(settings(api.endpoint, api_key_env="TEACHER_KEY"), None)


def test_a_rate_limit_storm_is_ridden_out_with_growing_waits(fake):
    api = fake(lambda n, body: (429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
               if n <= 3 else (200, answer("finally")))
    waits = []
    client = Client(settings(api.endpoint, backoff_s=0.5, max_retries=4), sleep=waits.append)
    assert client.post("chat/completions", {"model": "teacher"}) == answer("finally")
    assert len(waits) == 3 and waits[0] < waits[1] < waits[2]
    assert 0.5 <= waits[0] <= 0.55 and 2.0 <= waits[2] <= 2.2   # 0.5, 1, 2 (+ up to 10% jitter)
    slow = fake(lambda n, body: (503, {"error": "busy"}, {"Retry-After": "7"}) if n == 1
                else (200, answer("ok")))
    waits.clear()
    Client(settings(slow.endpoint, backoff_s=0.5), sleep=waits.append).post("x", {})
    assert 7.0 <= waits[0] <= 7.7    # the server's Retry-After wins


def test_refusals_become_record_errors_or_stop_the_stage(fake):
    api = fake(lambda n, body: (400, {"error": {"message": "prompt too long"}})
               if "long" in body["messages"][0]["content"] else (200, answer("fine")))
    model = RemoteChatModel(settings(api.endpoint), None)
    replies = model.reply([CHAT, [{"role": "user", "content": "long"}]], GenerationConfig())
    assert replies[0].text == "fine" and replies[0].error is None
    assert replies[1].error == "HTTP 400: prompt too long"
    denied = fake(lambda n, body: (401, {"error": {"message": "bad key"}}))
    with pytest.raises(UserError, match="API key was refused.*bad key"):
        RemoteChatModel(settings(denied.endpoint), None).reply([CHAT], GenerationConfig())
    assert len(denied.bodies) == 1   # never retried


def test_an_unreachable_endpoint_fails_after_the_retries_in_one_line(fake):
    api = fake(lambda n, body: (200, answer("x")))
    endpoint = api.endpoint
    api.close()
    waits = []
    client = Client(settings(endpoint, max_retries=2), sleep=waits.append)
    with pytest.raises(RemoteUnavailable) as error:
        client.post("chat/completions", {})
    assert len(waits) == 2 and "\n" not in str(error.value)
    assert "no answer from teacher after 3 tries" in str(error.value)


def test_clca_stages_on_a_remote_model_write_what_the_local_backend_writes(fake, tmp_path):
    local_out, remote_out = tmp_path / "local", tmp_path / "remote"
    config = write_config(tmp_path)
    for stage in ("simulate", "judge", "annotate"):
        run_stages(config, [], stage, local_out, {"smollm2-135m-instruct": Scripted(
            scripted_everything)})
    api = fake(scripted_api)
    remote = {"endpoint": api.endpoint, "model": "smollm2-135m-instruct", "backoff_s": 0.01}
    overrides = [f"simulate.model={json.dumps(remote)}"]
    for stage in ("simulate", "judge", "annotate"):
        run_stages(config, overrides, stage, remote_out)
    for name in ("dialogues.jsonl", "judged.jsonl", "annotated.jsonl"):
        assert (remote_out / name).read_text() == (local_out / name).read_text()
    provenance = json.loads((remote_out / "dialogues.provenance.json").read_text())
    assert provenance["models"] == [{"endpoint": api.endpoint, "model": "smollm2-135m-instruct"}] * 2
    asked = len(api.bodies)
    run_stages(config, overrides, "simulate", remote_out)   # finished: nothing asked again
    assert len(api.bodies) == asked
    other = {**remote, "model": "another-teacher"}
    with pytest.raises(UserError, match="made with other settings \\(models differ"):
        run_stages(config, [f"simulate.model={json.dumps(other)}"], "simulate", remote_out)


def test_a_server_lost_mid_stage_stops_it_keeping_every_finished_record(fake, tmp_path, capsys):
    from jaxcult.cli import main

    alive, answered = {"answers": 9}, set()   # 9: the first batch of dialogues, not the second

    def plan(number, body):
        if number > alive["answers"]:
            return 503, {"error": {"message": "server is gone"}}
        answered.add(json.dumps(body, sort_keys=True))
        return scripted_api(number, body)

    api = fake(plan)
    remote = {"endpoint": api.endpoint, "model": "smollm2-135m-instruct", "backoff_s": 0.01,
              "max_retries": 2}
    config = write_config(tmp_path, simulate={"model": remote, "max_turns": 2, "samples": 1,
                                              "dialogues_per_batch": 2})
    out = tmp_path / "out"
    code = main(["clca", "simulate", str(config), "--out", str(out)])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "no answer from smollm2-135m-instruct after 3 tries" in error[-1]
    kept = (out / "dialogues.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in kept] == ["japan-01#0", "japan-02#0"]
    alive["answers"], before, sent = 10 ** 6, set(answered), len(api.bodies)
    assert main(["clca", "simulate", str(config), "--out", str(out)]) == 0   # the server is back
    dialogues = (out / "dialogues.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in dialogues] == ["japan-01#0", "japan-02#0", "japan-03#0"]
    assert dialogues[:2] == kept
    resent = [json.dumps(b, sort_keys=True) for b in api.bodies[sent:]]
    assert resent and not set(resent) & before   # no answered request is paid for twice


def top_logprobs(entries: dict[str, float]) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"},
                         "logprobs": {"content": [{"token": "x", "logprob": -0.1, "top_logprobs": [
                             {"token": t, "logprob": v} for t, v in entries.items()]}]}}]}


def test_the_remote_pairs_judge_scores_from_top_logprobs_and_needs_them(fake):
    import numpy as np

    from jaxcult.recipes.pairs.config import JudgeConfig
    from jaxcult.recipes.pairs.judges import RemoteLogProbJudge

    api = fake(lambda n, body: (200, top_logprobs(
        {"3": np.log(0.3), " 3": np.log(0.1), "5": np.log(0.4), "Hello": np.log(0.2)})))
    digits = JudgeConfig(model=settings(api.endpoint).model_dump())
    judge = RemoteLogProbJudge(digits, RemoteChatModel(digits.model, None))
    first, failed, empty = judge.judge([({"prompt": "p"}, "a reply", None),
                                        ({"prompt": "p"}, "", "generation failed"),
                                        ({"prompt": "p"}, "  ", None)])
    assert first.option_mass == pytest.approx(0.8)           # "3" and " 3" add up; 1, 2, 4 absent
    assert first.score == pytest.approx((3 * 0.4 + 5 * 0.4) / 0.8)
    assert (failed.unscorable, empty.unscorable) == ("generation failed", "empty reply")
    body = api.bodies[0]
    assert body["max_tokens"] == 1 and body["top_logprobs"] == 20 and body["logprobs"] is True
    assert body["messages"][-1] == {"role": "assistant", "content": "Rating:"}
    assert len(api.bodies) == 1   # nothing asked for replies that cannot be judged

    only_yes = fake(lambda n, body: (200, top_logprobs({"yes": np.log(0.6)})))
    yes_no = JudgeConfig(model=settings(only_yes.endpoint).model_dump(), kind="yes_no")
    assert "outside the judge's top" in RemoteLogProbJudge(yes_no, RemoteChatModel(
        yes_no.model, None)).judge([({"prompt": "p"}, "r", None)])[0].unscorable
    bare = fake(lambda n, body: (200, answer("3")))
    plain = JudgeConfig(model=settings(bare.endpoint).model_dump())
    with pytest.raises(UserError, match="returned no logprobs; the pairs judge needs"):
        RemoteLogProbJudge(plain, RemoteChatModel(plain.model, None)).judge(
            [({"prompt": "p"}, "r", None)])
    with pytest.raises(ValueError, match="judge.generation"):
        JudgeConfig(model=settings(bare.endpoint).model_dump(),
                    generation={"batch_size": 4})


@pytest.mark.parametrize("model, message", [
    ({"endpoint": "localhost:8000/v1", "model": "m"}, "must start with http:// or https://"),
    ({"endpoint": "http://x/v1"}, "model"),
    ({"endpoint": "http://x/v1", "model": "m", "concurrency": 0}, "concurrency"),
    ({"endpoint": "http://x/v1", "model": "m", "api_key": "sk-1"}, "api_key"),  # keys stay out
])
def test_bad_remote_model_settings_name_the_key(tmp_path, model, message):
    config = write_config(tmp_path)
    with pytest.raises(UserError, match=message):
        run_stages(config, [f"simulate.model={json.dumps(model)}"], "simulate", tmp_path / "out")
    assert not (tmp_path / "out" / "dialogues.jsonl").exists()


def test_engine_only_settings_are_named_once_for_a_remote_model(fake, caplog):
    import logging

    api = fake(lambda n, body: (200, answer("ok")))
    model = RemoteChatModel(settings(api.endpoint), None)
    config = GenerationConfig(batch_size=4, chunk=2)
    with caplog.at_level(logging.WARNING):
        model.reply([CHAT], config)
        model.reply([CHAT], config)
    warned = [r.message for r in caplog.records if "local decoding only" in r.message]
    assert warned == ["remote model teacher: generation.batch_size, generation.chunk shape local "
                      "decoding only; its server batches the requests"]


def test_the_care_judge_asks_a_remote_model_each_metric_and_weights_its_digit(fake):
    """A remote judge: one request per metric, read from top_logprobs as a local one is."""
    import numpy as np

    from jaxcult.recipes.care.config import CareJudgeConfig
    from jaxcult.recipes.care.judge import CareJudge
    from jaxcult.recipes.care.rubrics import load_metrics
    from jaxcult.recipes.pairs.judges import RemoteLogProbJudge

    def plan(n, body):   # sure of 4 on empathy, unsure between 2 and 3 on fluency
        empathy = "Quality: empathy." in body["messages"][0]["content"]
        return 200, top_logprobs({"4": np.log(0.9)} if empathy else
                                 {"2": np.log(0.3), "3": np.log(0.5)})

    api = fake(plan)
    spec = settings(api.endpoint)
    client = RemoteChatModel(spec, None)
    judge = CareJudge(CareJudgeConfig(model=spec.model_dump()),
                      load_metrics(["empathy", "fluency"], None), spec,
                      lambda s: RemoteLogProbJudge(s, client))
    found = judge.judge([("my post", "my reply", None)])[0]
    empathy, fluency = found["metrics"]["empathy"], found["metrics"]["fluency"]
    assert (empathy["digit"], empathy["weighted"], empathy["expected"]) == pytest.approx((4, 3.6, 4))
    assert (fluency["digit"], fluency["weighted"]) == pytest.approx((3, 1.5))
    assert fluency["expected"] == pytest.approx((2 * 0.3 + 3 * 0.5) / 0.8)
    assert found["normalised"] == pytest.approx((3.6 + 1.5) / 2)
    assert len(api.bodies) == 2 and api.bodies[0]["messages"][-1]["content"] == "Score:"
