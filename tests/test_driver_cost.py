"""What keeps the driver's cost per env step low without changing what is collected: executor
calls batched per worker (one message per batch, replies per call, a death mid-batch blamed on
the call being served only) and the runner's memo of template calls."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from transformers import AutoTokenizer

from tests.policy_fixtures import tiny_model  # noqa: F401 - fixture
from treegym.harness import InProcessExecutor, ProcessExecutor
from treegym.harness.executor import EnvWorkerCore, EnvWorkerDied, EnvWorkerError
from treegym.harness.template_memo import TemplateMemo
from treegym.policies import GenerateResult, ReActTemplate

ENV = "treegym/ToyRooms-v0"


@pytest.fixture
def template(tiny_model):  # noqa: F811
    return ReActTemplate(AutoTokenizer.from_pretrained(tiny_model))


def test_calls_made_together_travel_as_one_batch_and_answer_like_the_core():
    async def go():
        ex = InProcessExecutor(ENV)
        outs = await asyncio.gather(*(ex.reset(0, {"task": i}, i) for i in range(6)))
        steps = await asyncio.gather(*(ex.step(o.state, "look") for o in outs))
        bad = await asyncio.gather(ex.step(outs[0].state, "look"), ex.step(steps[0].state, 1),
                                   return_exceptions=True)  # fmt: skip
        return ex.batcher, outs, steps, bad

    batcher, outs, steps, bad = asyncio.run(go())
    assert (batcher.batches, batcher.calls) == (3, 14)  # six resets, six steps, two together
    core = EnvWorkerCore(ENV)
    for i, (out, step) in enumerate(zip(outs, steps, strict=True)):
        want = core.reset(str(i), i, {"task": i})
        assert (out.obs, out.info) == (want.obs, want.info)
        want = core.step(want.state.snap, "look")
        assert (step.obs, step.reward, step.info) == (want.obs, want.reward, want.info)
    # one call's env error fails that call only, its batch-mate is answered
    assert not isinstance(bad[0], Exception) and bad[0].obs == steps[0].obs
    assert isinstance(bad[1], EnvWorkerError) and "action must be a str" in str(bad[1])


def test_a_death_mid_batch_blames_only_the_call_being_served():
    """The worker holds a batch of three and dies before answering: the first call (being
    served) may have caused it; the two queued behind it did not (the worker had served
    calls before), so they do not use up their retries."""
    ex = ProcessExecutor(ENV, n_workers=1)
    try:
        state = asyncio.run(ex.reset(0, {"task": 0}, 0)).state
        w = ex.workers[0]
        os.kill(w.proc.pid, signal.SIGSTOP)
        send = w.conn.send

        def send_then_kill(msg):
            send(msg)
            os.kill(w.proc.pid, signal.SIGKILL)

        w.conn.send = send_then_kill
        outcomes = w.roundtrip_batch([("step", (state.snap, "look"))] * 3)
    finally:
        asyncio.run(ex.close())
    assert [ok for ok, _ in outcomes] == [False] * 3
    assert all(isinstance(e, EnvWorkerDied) for _, e in outcomes)
    assert [e.blame for _, e in outcomes] == [True, False, False]


def test_the_memo_asks_the_template_once_per_distinct_value(template):
    calls = []

    class Counting(ReActTemplate):
        def observation_ids(self, observation, admissible=None):
            calls.append(observation)
            return super().observation_ids(observation, admissible)

    counting = Counting(template.tokenizer)
    memo = TemplateMemo(counting)
    for obs in ("a kitchen", "a hall", "a kitchen", "a kitchen"):
        assert list(memo.observation_ids(obs, ["go north"])) == template.observation_ids(
            obs, ["go north"]
        )
    assert calls == ["a kitchen", "a hall"]
    memo.observation_ids("a kitchen", ["go south"])  # other commands: another value
    assert calls[-1] == "a kitchen" and len(calls) == 3
    ids = tuple(template.encode(template.assistant_text("hm", "open chest")))
    first = GenerateResult(ids, (-0.5,) * len(ids), "stop", 3, 0, 0.1)
    again = GenerateResult(ids, (-0.1,) * len(ids), "stop", 9, 2, 0.2)
    for result in (first, again):
        reading = memo.read(result)
        want = template.read(result)
        assert reading == want and reading.result is result
        assert reading.action == "open chest"


def test_an_ended_state_gets_no_snapshot_and_cannot_be_stepped_from():
    core = EnvWorkerCore(ENV, {"max_episode_steps": 2})
    state = core.reset("k", 0, {"task": 0}).state
    first = core.step(state.snap, "look")
    last = core.step(first.state.snap, "look")
    assert last.truncated and last.snapshot_s == 0.0
    assert core.snaps[last.state.snap][1] is None and core.snaps[first.state.snap][1] is not None
    again = core.step(first.state.snap, "inventory")  # a live state restores as before
    assert again.restores == 1 and again.truncated
    with pytest.raises(EnvWorkerError, match="ended its episode: it has no snapshot"):
        core.step(last.state.snap, "look")
