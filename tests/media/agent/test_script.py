"""The script brain: a whole conversation, matching, re-prompts, silence, bad scripts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from media.agent.interfaces import BrainEvent, Line, sentences
from media.agent.script import ScriptBrain, check_script, normalise, walk
from signaling.scenarios import ScenarioError, load_scenarios

SCRIPT: dict[str, Any] = {
    "start": "drink",
    "max_reprompts": 2,
    "steps": {
        "drink": {
            "say": "What would you like",
            "expect": [
                {"any": ["tea"], "reply": "Tea, lovely.", "next": "size",
                 "example": "a cup of tea please"},
                {"any": ["coffee", "latte"], "next": "size"},
                {"all": ["hot", "chocolate"], "next": "size"},
            ],
            "reprompt": ["Sorry, what would you like?", "Coffee or tea?"],
            "otherwise": "size",
            "silence": "Still there?",
        },
        "size": {"say": "How many cups?", "expect": [
            {"pattern": r"\b(two|three) cups?\b", "next": "bye", "reply": "Several!"},
            {"any": ["one"], "next": "bye"},
        ], "otherwise": "bye", "max_reprompts": 0},
        "bye": {"say": "Goodbye!", "end": True},
    },
}


async def say(brain: ScriptBrain, kind: str, text: str = "") -> list[str]:
    """What the agent says for one event, cut the way the agent cuts it."""
    streamed = "".join([c async for c in brain.respond([], BrainEvent(kind, text))])  # type: ignore[arg-type]
    out, rest = sentences(streamed, final=True)
    assert rest == ""
    return out


async def test_a_whole_conversation() -> None:
    brain = ScriptBrain(SCRIPT, welcome_message="Hi, I am Sam")
    assert brain.expected() == ()
    assert await say(brain, "start") == ["Hi, I am Sam.", "What would you like."]
    assert brain.expected() == ("tea", "a cup of tea please", "coffee", "latte", "hot",
                                "chocolate")
    assert await say(brain, "turn", "A cup of TEA, please!") == ["Tea, lovely.",
                                                                 "How many cups?"]
    assert not brain.finished
    assert await say(brain, "turn", "Two cups") == ["Several!", "Goodbye!"]
    assert brain.finished
    assert brain.path == ["drink", "size", "bye"]
    assert await say(brain, "turn", "hello?") == []  # nothing after the end
    assert brain.expected() == ()


async def test_the_meetings_welcome_comes_before_the_scenarios() -> None:
    brain = ScriptBrain(SCRIPT, welcome_message="Hi, I am Sam.")
    assert await say(brain, "start", "Welcome back, Ann.") == ["Welcome back, Ann.",
                                                              "What would you like."]
    assert await say(brain, "start") == []  # said once


async def test_reprompts_are_bounded_then_the_conversation_moves_on() -> None:
    brain = ScriptBrain(SCRIPT)
    assert await say(brain, "start") == ["What would you like."]  # no welcome: the first line
    assert await say(brain, "turn", "uh") == ["Sorry, what would you like?"]
    assert await say(brain, "turn", "") == ["Coffee or tea?"]
    assert await say(brain, "turn", "mumble") == ["How many cups?"]  # otherwise
    assert brain.step == "size"
    # max_reprompts 0: straight on
    assert await say(brain, "turn", "purple") == ["Goodbye!"]
    assert brain.finished


async def test_silence_reprompts_are_bounded_and_interruptions_say_nothing() -> None:
    brain = ScriptBrain(SCRIPT)
    await say(brain, "start")
    assert await say(brain, "silence") == ["Still there?"]
    assert await say(brain, "interrupted") == []
    assert await say(brain, "silence") == ["Still there?"]
    assert await say(brain, "silence") == []  # max_reprompts (2) used up
    assert await say(brain, "turn", "latte") == ["How many cups?"]  # counters reset per step
    assert await say(brain, "silence") == []  # this step's max_reprompts is 0


async def test_a_new_agent_takes_the_conversation_up_from_the_history() -> None:
    """Failover: a new agent process starts with the transcript so far."""
    history = [Line("agent", "Hi, I am Sam."), Line("agent", "What would you like."),
               Line("person", "um"), Line("agent", "Sorry, what would you like?"),
               Line("person", "a latte please"), Line("agent", "How many", interrupted=True)]
    brain = ScriptBrain(SCRIPT, welcome_message="Hi, I am Sam.")
    said = "".join([c async for c in brain.respond(history, BrainEvent("start"))])
    assert said == "How many cups? "  # no second welcome: the current step's line again
    assert brain.path == ["drink", "size"]
    assert await say(brain, "turn", "one") == ["Goodbye!"]
    # a conversation that had reached its end stays ended
    finished = ScriptBrain(SCRIPT)
    history.append(Line("person", "two cups"))
    assert [c async for c in finished.respond(history, BrainEvent("start"))] == []
    assert finished.finished


def test_matching_tolerates_recognition() -> None:
    assert normalise("I've got 25 years' experience!") == ["ive", "got", "twenty", "five",
                                                           "years", "experience"]
    assert normalise("Room 1234567") == ["room", "one", "two", "three", "four", "five", "six",
                                         "seven"]
    lines = walk(SCRIPT, ["i'd like HOT, um, chocolate", "3 cups"])
    assert lines == ["What would you like.", "How many cups?", "Several!", "Goodbye!"]
    # all-of needs every keyword; a plural matches its singular keyword and vice versa
    assert walk(SCRIPT, ["hot water", "lattes"])[1:3] == ["Sorry, what would you like?",
                                                          "How many cups?"]
    # a keyword matches whole words only ("tea" is not in "steam")
    assert walk(SCRIPT, ["steam"])[1] == "Sorry, what would you like?"
    # the pattern sees numbers as words
    assert walk(SCRIPT, ["tea", "2 cup"])[-2:] == ["Several!", "Goodbye!"]


def test_next_without_expect_takes_any_answer() -> None:
    script = {"start": "a", "steps": {"a": {"say": "Tell me anything.", "next": "b"},
                                      "b": {"say": "Bye.", "end": True}}}
    assert walk(script, ["whatever"]) == ["Tell me anything.", "Bye."]
    # an empty transcript (noise) is not an answer: a re-prompt
    assert walk(script, ["", "ok"]) == ["Tell me anything.", "Sorry, I did not catch that.",
                                        "Bye."]


def test_expected_phrases_are_written_as_a_recogniser_writes() -> None:
    script = copy.deepcopy(SCRIPT)
    script["steps"]["drink"]["expect"][0]["example"] = "I'd like 2 teas, please!"
    brain = ScriptBrain(script)
    brain.lines(BrainEvent("start"))
    assert brain.expected()[:2] == ("tea", "i'd like two teas please")


def bad(change: Any) -> dict[str, Any]:
    script = copy.deepcopy(SCRIPT)
    change(script)
    return script


@pytest.mark.parametrize(("script", "fault"), [
    (bad(lambda s: s.pop("start")), "start: the name of the first step is required"),
    (bad(lambda s: s.update(start="nowhere")), "start: unknown step 'nowhere'"),
    (bad(lambda s: s["steps"]["drink"]["expect"][1].update(next="tip")),
     "step 'drink': next step 'tip' is unknown"),
    (bad(lambda s: s["steps"]["size"].update(otherwise="lost")),
     "step 'size': next step 'lost' is unknown"),
    (bad(lambda s: s["steps"]["drink"]["expect"][0].update(pattern="(tea")),
     "step 'drink': expect[0]: bad pattern '(tea'"),
    (bad(lambda s: s["steps"]["bye"].update(end=False, next="drink")),
     "no step has end: true"),
    (bad(lambda s: s["steps"].update(island={"say": "Hm.", "end": True})),
     "step 'island' cannot be reached"),
    (bad(lambda s: s["steps"].update(
        loop={"say": "Again.", "next": "loop"},
        drink={**s["steps"]["drink"], "otherwise": "loop"})),
     "step 'loop': no end step can be reached from it"),
    (bad(lambda s: s["steps"]["drink"].pop("otherwise")), "otherwise (the step after"),
    (bad(lambda s: s["steps"]["drink"]["expect"].append({"next": "size"})),
     "expect[3]: give any, all or pattern"),
    (bad(lambda s: s["steps"]["drink"]["expect"][0].update(example="coffee")),
     "expect[0]'s example 'coffee' is taken by expect[1] first"),
    (bad(lambda s: s["steps"]["drink"]["expect"][0].update(example="nothing")),
     "expect[0]'s example 'nothing' matches no answer"),
    (bad(lambda s: s["steps"]["drink"].update(sayy="typo")), "unknown field(s) sayy"),
    (bad(lambda s: s["steps"]["drink"].update(say="")), "step 'drink': say: a line"),
    (bad(lambda s: s.update(max_reprompts=50)), "max_reprompts: a whole number 0..5"),
    (bad(lambda s: s["steps"]["drink"]["expect"][0].update(any=["?!"])), "is not a keyword"),
    (bad(lambda s: s["steps"]["drink"]["expect"][0].update(any=[True])),
     "quote yes, no, on, off"),
    (bad(lambda s: s["steps"]["bye"].update(next="drink")), "an end step has no expect"),
    (bad(lambda s: s["steps"].update({"bad name": {"say": "x", "end": True}})),
     "step name 'bad name'"),
])
def test_bad_scripts_are_refused_with_the_fault(script: dict[str, Any], fault: str) -> None:
    with pytest.raises(ValueError) as raised:
        check_script(script)
    assert fault in str(raised.value)


def test_a_scenario_without_a_script_says_the_welcome_and_ends() -> None:
    check_script({})
    brain = ScriptBrain({}, welcome_message="Hello")
    assert brain.lines(BrainEvent("start")) == ["Hello."]
    assert brain.finished


def test_the_shipped_scenarios_load_and_play_through(tmp_path: Any) -> None:
    scenarios = load_scenarios(check_script=check_script)
    assert set(scenarios) >= {"interview-practice", "coffee-order"}
    interview = scenarios["interview-practice"]
    lines = walk(interview.script, ["I am applying for a software developer job",
                                    "I have five years of experience",
                                    "I work well in a team"],
                 welcome_message=interview.persona.welcome_message)
    assert lines[0] == interview.persona.welcome_message
    assert lines[-1].startswith("Thank you, those are all my questions")
    assert len(lines) == 8  # welcome, 3 x (question, reaction), goodbye
    # a broken script in a deployment's directory stops the load, naming file and fault
    (tmp_path / "broken.yaml").write_text(
        "title: T\npersona: {name: P}\nscript: {start: a, steps: {a: {say: Hi, next: b}}}\n")
    with pytest.raises(ScenarioError, match=r"broken.yaml: script: step 'a': next step 'b'"):
        load_scenarios(tmp_path, check_script=check_script)
