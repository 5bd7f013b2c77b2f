"""The LLM brain against a local server that speaks OpenAI's streaming chat-completions API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from media.agent.interfaces import BrainEvent, Line, sentences
from media.agent.llm import FALLBACK, LlmBrain
from tests.support.fake_openai import FakeOpenAI, Raw, Reply

INSTRUCTIONS = "You are Sam, a barista."


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def brain(server: FakeOpenAI) -> AsyncIterator[LlmBrain]:
    made = LlmBrain(base_url=server.base_url, model="gpt-test", api_key=server.api_key,
                    instructions=INSTRUCTIONS, welcome_message="Hi, I am Sam.",
                    timeout_s=5.0, read_timeout_s=2.0)
    try:
        yield made
    finally:
        await made.aclose()
        await made.aclose()  # idempotent


async def reply(brain: LlmBrain, history: list[Line], event: BrainEvent) -> list[str]:
    text = "".join([c async for c in brain.respond(history, event)])
    return sentences(text, final=True)[0]


async def test_the_first_sentence_is_ready_before_the_stream_ends(
        server: FakeOpenAI, brain: LlmBrain) -> None:
    release = asyncio.Event()
    server.replies.append(Reply(["A lat", "te, good ", "choice. What", " size", release,
                                 " would you like?"]))
    history = [Line("agent", "What would you like to drink?"), Line("person", "a latte")]
    buffer, spoken = "", []
    async for delta in brain.respond(history, BrainEvent("turn", "a latte")):
        buffer += delta
        cut, buffer = sentences(buffer)
        spoken += cut
        if cut and not release.is_set():
            # the first sentence is out while the server still holds the end of the stream
            assert spoken == ["A latte, good choice."]
            assert server.finished == 0
            release.set()
    spoken += sentences(buffer, final=True)[0]
    assert spoken == ["A latte, good choice.", "What size would you like?"]
    assert server.finished == 1
    assert brain.last_error == ""
    # the request: the persona's instructions as system prompt, the history as messages, the
    # person's turn once (it ends the history already)
    (request,) = server.requests
    assert request["model"] == "gpt-test" and request["stream"] is True
    assert request["messages"] == [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "assistant", "content": "What would you like to drink?"},
        {"role": "user", "content": "a latte"},
    ]


async def test_turns_silence_and_interruptions_become_messages(
        server: FakeOpenAI, brain: LlmBrain) -> None:
    history = [Line("agent", "What would you", interrupted=True)]
    assert await reply(brain, history, BrainEvent("turn", "tea please")) == ["Hello."]
    assert server.requests[-1]["messages"][1:] == [
        {"role": "assistant", "content": "What would you [interrupted by the person]"},
        {"role": "user", "content": "tea please"},
    ]
    await reply(brain, [], BrainEvent("silence"))
    assert server.requests[-1]["messages"][-1]["role"] == "system"
    assert "not said anything" in server.requests[-1]["messages"][-1]["content"]
    # the welcome is the meeting's (or the persona's) own words: no request
    assert await reply(brain, [], BrainEvent("start", "Welcome, Ann.")) == ["Welcome, Ann."]
    assert await reply(brain, [], BrainEvent("start")) == ["Hi, I am Sam."]
    assert await reply(brain, [], BrainEvent("interrupted")) == []
    assert await reply(brain, [], BrainEvent("turn", "  ")) == []
    assert len(server.requests) == 2
    assert brain.expected() == () and not brain.finished


@pytest.mark.parametrize(("make_reply", "error"), [
    (lambda: Reply(status=500, error="The server had an error while processing."),
     "HTTP 500: The server had an error while processing."),
    (lambda: Reply(status=429, error="Rate limit reached for requests"),
     "HTTP 429: Rate limit reached"),
    (lambda: Reply(["Sure", Raw(b"data: {not json\n\n")]), "a chunk is not JSON"),
    (lambda: Reply(["Sure", Raw(b'data: {"error": {"message": "overloaded"}}\n\n')]),
     "the stream reported an error: overloaded"),
    (lambda: Reply(["Sure"], done=False), "ended without data: [DONE]"),
])
async def test_errors_end_the_reply_with_the_spoken_fallback(
        server: FakeOpenAI, brain: LlmBrain, make_reply, error: str) -> None:  # type: ignore[no-untyped-def]
    server.replies.append(make_reply())
    said = await reply(brain, [], BrainEvent("turn", "hello"))
    # what was said before the error ends as a sentence, then the fallback
    assert " ".join(said) in (FALLBACK, "Sure. " + FALLBACK)
    assert error in brain.last_error
    # the brain carries on: the next turn works
    server.replies.append(Reply(["Fine."]))
    assert await reply(brain, [], BrainEvent("turn", "hello?")) == ["Fine."]
    assert brain.last_error == ""


async def test_a_bad_key_is_reported(server: FakeOpenAI) -> None:
    brain = LlmBrain(base_url=server.base_url, model="m", api_key="sk-wrong")
    try:
        said = await reply(brain, [], BrainEvent("turn", "hello"))
    finally:
        await brain.aclose()
    assert " ".join(said) == FALLBACK
    assert brain.last_error == "HTTP 401: Incorrect API key provided."
    assert server.requests == []


async def test_a_stalled_stream_times_out_into_the_fallback(server: FakeOpenAI) -> None:
    never = asyncio.Event()
    server.replies.append(Reply(["Let me think", never]))
    brain = LlmBrain(base_url=server.base_url, model="m", api_key=server.api_key,
                     read_timeout_s=0.3)
    try:
        said = "".join([c async for c in brain.respond([], BrainEvent("turn", "hi"))])
    finally:
        await brain.aclose()
        never.set()
    assert said == "Let me think. " + FALLBACK
    assert brain.last_error  # a read timeout


async def test_nothing_listening_is_a_fallback_not_a_crash() -> None:
    from signaling.testing.ports import free_port

    brain = LlmBrain(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", api_key="k")
    try:
        assert "".join([c async for c in brain.respond([], BrainEvent("turn", "hi"))]) \
            == FALLBACK
    finally:
        await brain.aclose()
    assert "Cannot connect" in brain.last_error


async def test_the_consumer_stopping_closes_the_request(server: FakeOpenAI,
                                                        brain: LlmBrain) -> None:
    """Barge-in: the agent drops the reply mid-stream; the next request still works."""
    hold = asyncio.Event()
    server.replies.append(Reply(["One. ", hold, "Two."]))
    stream = brain.respond([], BrainEvent("turn", "hi"))
    assert await anext(stream) == "One. "
    await stream.aclose()
    hold.set()
    server.replies.append(Reply(["Again."]))
    assert await reply(brain, [], BrainEvent("turn", "hi")) == ["Again."]


async def test_a_runaway_reply_is_cut(server: FakeOpenAI) -> None:
    server.replies.append(Reply(["word " * 50] * 10))
    brain = LlmBrain(base_url=server.base_url, model="m", api_key=server.api_key,
                     max_reply_chars=300)
    try:
        said = "".join([c async for c in brain.respond([], BrainEvent("turn", "talk"))])
    finally:
        await brain.aclose()
    assert len(said) == 300
