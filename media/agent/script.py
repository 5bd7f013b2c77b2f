"""The embedded brain: a scenario's scripted conversation, offline and deterministic.

A scenario's ``script`` is a graph of **steps**. Entering a step, the agent says its line;
the person's answer is matched against the step's **expected answers** (keywords, all-of
keywords or a regular expression, on normalised text) and the first that matches names the
next step. An answer that matches nothing gets a re-prompt, a bounded number of times, then
the conversation moves on to the step's ``otherwise``. Silence gets its own bounded
re-prompt. A step marked ``end`` is the last thing the agent says. docs/agent.md documents
the format; in short::

    script:
      start: role                      # the first step (its line follows the welcome)
      max_reprompts: 2                 # default re-prompts per step (0..5)
      reprompt: Sorry, I did not catch that.   # default re-prompt line
      silence: Take your time.         # default line after a silence
      steps:
        role:
          say: What role are you applying for?
          expect:
            - any: [developer, engineer, programmer]  # one of these words or phrases
              reply: A developer, great.              # optional, said before the next line
              next: experience
              example: I am applying for a developer job   # what a test bot can say
            - pattern: "\\bdesign(er)?\\b"            # a regex on the normalised text
              next: experience
          reprompt: Is it a developer or a designer role?  # str or list (said in turn)
          otherwise: experience        # after max_reprompts answers that matched nothing
        experience:
          say: How many years have you worked?
          next: bye                    # any answer moves on (no expect)
        bye:
          say: Thank you, goodbye.
          end: true

Recognition makes mistakes, so matching is lenient: lower case, punctuation dropped, numbers
written as words ("5" and "five" are the same word), a keyword matches a word with or without
a plural ``s``/``es``, and a keyword of several words matches them in sequence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .interfaces import BrainEvent, Line

logger = logging.getLogger(__name__)

#: Re-prompts per step when neither the step nor the script says (then ``otherwise``).
DEFAULT_MAX_REPROMPTS = 2
#: The most re-prompts a script may ask for: a person who is not understood should not be
#: stuck in a loop.
MAX_REPROMPTS_LIMIT = 5
DEFAULT_REPROMPT = "Sorry, I did not catch that."
DEFAULT_SILENCE = "Take your time. I am listening."
_STEP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STEP_KEYS = {"say", "expect", "next", "reprompt", "otherwise", "silence", "end",
              "max_reprompts"}
_ANSWER_KEYS = {"any", "all", "pattern", "next", "reply", "example"}
_SCRIPT_KEYS = {"start", "steps", "max_reprompts", "reprompt", "silence"}
_MAX_LINE = 1000  # characters of one line the agent says


class ScriptError(ValueError):
    """A script that cannot be used; the message names the step and the fault."""


# --------------------------------------------------------------------------- normalising

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """``n`` (0..999 999) in English words, as a recogniser writes it ("twenty five")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    thousands, rest = divmod(n, 1000)
    return number_words(thousands) + " thousand" + ("" if rest == 0 else
                                                     " " + number_words(rest))


def _digits(match: re.Match[str]) -> str:
    text = match.group(0)
    if len(text) <= 6:
        return f" {number_words(int(text))} "
    return " " + " ".join(_ONES[int(d)] for d in text) + " "  # a long number: digit by digit


def normalise(text: str) -> list[str]:
    """``text`` as the words matching compares: lower case, apostrophes dropped ("don't" is
    "dont"), other punctuation a word break, numbers in words."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = re.sub(r"\d+", _digits, text)
    return re.findall(r"[^\W_]+", text)


def hint(text: str) -> str:
    """``text`` as a recogniser writes it: lower case, numbers in words, punctuation other
    than apostrophes dropped ("I'm 25!" is "i'm twenty five")."""
    text = re.sub(r"\d+", _digits, text.lower().replace("\u2019", "'"))
    return " ".join(w.strip("'") for w in re.findall(r"[^\W_]+(?:'[^\W_]+)*", text))


def _same(keyword: str, word: str) -> bool:
    if keyword == word:
        return True
    # a plural either way ("year"/"years", "glass"/"glasses"); not for short words ("i"/"is")
    short, long = sorted((keyword, word), key=len)
    return len(short) >= 3 and long in (short + "s", short + "es")


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    n = len(phrase)
    return n > 0 and any(all(_same(p, w) for p, w in zip(phrase, words[i:i + n]))
                         for i in range(len(words) - n + 1))


# --------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class Answer:
    """One expected answer of a step: when it matches, the conversation goes to ``next``."""

    next: str
    any: tuple[tuple[str, ...], ...] = ()
    all: tuple[tuple[str, ...], ...] = ()
    pattern: re.Pattern[str] | None = None
    reply: str = ""
    example: str = ""

    def matches(self, words: Sequence[str]) -> bool:
        """Whether an utterance (normalised: :func:`normalise`) is this answer."""
        if self.any and not any(_contains(words, k) for k in self.any):
            return False
        if self.all and not all(_contains(words, k) for k in self.all):
            return False
        return self.pattern is None or self.pattern.search(" ".join(words)) is not None

    def keywords(self) -> list[str]:
        """Its keywords and phrases, as written words."""
        return [" ".join(k) for k in (*self.any, *self.all)]


@dataclass(frozen=True)
class Step:
    """One step of a script: the agent's line and what may follow it."""

    name: str
    say: str
    expect: tuple[Answer, ...] = ()
    #: With no ``expect``: any answer moves on to this step.
    next: str = ""
    reprompt: tuple[str, ...] = ()
    otherwise: str = ""
    silence: str = ""
    max_reprompts: int = DEFAULT_MAX_REPROMPTS
    end: bool = False

    def successors(self) -> list[str]:
        """The steps this one can lead to."""
        out = [a.next for a in self.expect]
        out += [s for s in (self.next, self.otherwise) if s]
        return out


@dataclass(frozen=True)
class Script:
    """A checked script (:func:`parse_script`)."""

    start: str
    steps: Mapping[str, Step]

    def examples(self) -> dict[str, list[str]]:
        """Per step, the ``example`` utterances of its answers (what a test bot says)."""
        return {name: [a.example for a in step.expect if a.example]
                for name, step in self.steps.items()}


def check_script(mapping: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the fault when ``mapping`` is not a valid script (unknown
    step, no start, an end that cannot be reached, a bad regex, ...). An empty mapping is
    valid: a scenario without a script (the script brain then only says the welcome)."""
    parse_script(mapping)


def parse_script(mapping: Mapping[str, Any]) -> Script | None:
    """The script of a scenario (``None`` for an empty one); ``ValueError`` when invalid."""
    if not mapping:
        return None
    if not isinstance(mapping, Mapping):
        raise ScriptError("a script is a mapping (start, steps, ...)")
    _unknown(mapping, _SCRIPT_KEYS, "script")
    default_max = _count(mapping.get("max_reprompts", DEFAULT_MAX_REPROMPTS), "max_reprompts")
    default_reprompt = _line(mapping.get("reprompt", DEFAULT_REPROMPT), "reprompt")
    default_silence = _line(mapping.get("silence", DEFAULT_SILENCE), "silence")
    raw_steps = mapping.get("steps")
    if not isinstance(raw_steps, Mapping) or not raw_steps:
        raise ScriptError("steps: a mapping of step name -> step is required")
    start = mapping.get("start")
    if not isinstance(start, str) or not start:
        raise ScriptError("start: the name of the first step is required")
    steps: dict[str, Step] = {}
    for name, raw in raw_steps.items():
        if not isinstance(name, str) or not _STEP_NAME.match(name):
            raise ScriptError(f"step name {name!r} must be 1-64 letters, digits, _ or -")
        steps[name] = _step(name, raw, default_max, default_reprompt, default_silence)
    if start not in steps:
        raise ScriptError(f"start: unknown step {start!r}")
    for step in steps.values():
        for target in step.successors():
            if target not in steps:
                raise ScriptError(f"step {step.name!r}: next step {target!r} is unknown")
    reachable = _reachable(start, steps)
    ends = [n for n, s in steps.items() if s.end]
    if not ends:
        raise ScriptError("no step has end: true (the conversation must be able to finish)")
    if not any(n in reachable for n in ends):
        raise ScriptError(f"no end step ({', '.join(ends)}) can be reached from {start!r}")
    for name in steps:
        if name not in reachable:
            raise ScriptError(f"step {name!r} cannot be reached from start {start!r}")
        if not any(e in _reachable(name, steps) for e in ends):
            raise ScriptError(f"step {name!r}: no end step can be reached from it")
    return Script(start, steps)


def _unknown(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(str(k) for k in raw if k not in allowed)
    if extra:
        raise ScriptError(f"{where}: unknown field(s) {', '.join(extra)} "
                         f"(allowed: {', '.join(sorted(allowed))})")


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_REPROMPTS_LIMIT:
        raise ScriptError(f"{where}: a whole number 0..{MAX_REPROMPTS_LIMIT}")
    return value


def _line(value: Any, where: str, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ScriptError(f"{where}: a line of text is required")
    if len(value) > _MAX_LINE:
        raise ScriptError(f"{where}: longer than {_MAX_LINE} characters")
    return " ".join(value.split())


def _keywords(value: Any, where: str) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ScriptError(f"{where}: a keyword or a non-empty list of keywords")
    out = []
    for item in items:
        words = normalise(str(item)) if isinstance(item, (str, int)) and not isinstance(
            item, bool) else []
        if not words:
            hint = " (quote yes, no, on, off, true and false in YAML)" \
                if isinstance(item, bool) else ""
            raise ScriptError(f"{where}: {item!r} is not a keyword (letters or digits){hint}")
        out.append(tuple(words))
    return tuple(out)


def _step(name: str, raw: Any, default_max: int, default_reprompt: str,
          default_silence: str) -> Step:
    where = f"step {name!r}"
    if not isinstance(raw, Mapping):
        raise ScriptError(f"{where}: a step is a mapping (say, expect, ...)")
    _unknown(raw, _STEP_KEYS, where)
    say = _line(raw.get("say"), f"{where}: say", required=True)
    end = raw.get("end", False)
    if not isinstance(end, bool):
        raise ScriptError(f"{where}: end is true or false")
    raw_expect = raw.get("expect")
    nxt = raw.get("next", "")
    if not isinstance(nxt, str):
        raise ScriptError(f"{where}: next is a step name")
    if end and (raw_expect or nxt or raw.get("otherwise")):
        raise ScriptError(f"{where}: an end step has no expect, next or otherwise")
    if raw_expect and nxt:
        raise ScriptError(f"{where}: give either expect (answers) or next (any answer), "
                         "not both")
    if not end and not raw_expect and not nxt:
        raise ScriptError(f"{where}: needs expect, next or end: true")
    answers: list[Answer] = []
    if raw_expect is not None:
        if not isinstance(raw_expect, list) or not raw_expect:
            raise ScriptError(f"{where}: expect is a non-empty list of answers")
        for i, item in enumerate(raw_expect):
            answers.append(_answer(item, f"{where}: expect[{i}]"))
    otherwise = raw.get("otherwise", "")
    if not isinstance(otherwise, str):
        raise ScriptError(f"{where}: otherwise is a step name")
    if answers and not otherwise:
        raise ScriptError(f"{where}: otherwise (the step after the re-prompts run out) "
                         "is required with expect")
    reprompt_raw = raw.get("reprompt", default_reprompt)
    items = reprompt_raw if isinstance(reprompt_raw, list) else [reprompt_raw]
    reprompt = tuple(_line(r, f"{where}: reprompt", required=True) for r in items)
    if not reprompt:
        raise ScriptError(f"{where}: reprompt is a line or a non-empty list of lines")
    max_reprompts = _count(raw.get("max_reprompts", default_max), f"{where}: max_reprompts")
    silence = _line(raw.get("silence", default_silence), f"{where}: silence")
    step = Step(name, say, tuple(answers), nxt, reprompt, otherwise, silence, max_reprompts,
                end)
    for i, answer in enumerate(step.expect):
        if answer.example:  # the documented answer must be understood as itself
            words = normalise(answer.example)
            first = next((j for j, a in enumerate(step.expect) if a.matches(words)), None)
            if first != i:
                raise ScriptError(f"{where}: expect[{i}]'s example {answer.example!r} "
                                 + ("matches no answer" if first is None
                                    else f"is taken by expect[{first}] first"))
    return step


def _answer(raw: Any, where: str) -> Answer:
    if not isinstance(raw, Mapping):
        raise ScriptError(f"{where}: an answer is a mapping (any, all, pattern, next, ...)")
    _unknown(raw, _ANSWER_KEYS, where)
    nxt = raw.get("next")
    if not isinstance(nxt, str) or not nxt:
        raise ScriptError(f"{where}: next (the step this answer leads to) is required")
    pattern = None
    if raw.get("pattern") is not None:
        if not isinstance(raw["pattern"], str) or not raw["pattern"]:
            raise ScriptError(f"{where}: pattern is a regular expression")
        try:
            pattern = re.compile(raw["pattern"])
        except re.error as exc:
            raise ScriptError(f"{where}: bad pattern {raw['pattern']!r}: {exc}") from None
    answer = Answer(nxt, _keywords(raw.get("any"), f"{where}: any"),
                    _keywords(raw.get("all"), f"{where}: all"), pattern,
                    _line(raw.get("reply"), f"{where}: reply"),
                    _line(raw.get("example"), f"{where}: example"))
    if not answer.any and not answer.all and pattern is None:
        raise ScriptError(f"{where}: give any, all or pattern (what the answer must contain)")
    return answer


def _reachable(start: str, steps: Mapping[str, Step]) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in steps[todo.pop()].successors():
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# --------------------------------------------------------------------------- the brain


@dataclass
class _State:
    step: str = ""
    reprompts: int = 0  # unmatched answers in this step
    silences: int = 0  # silence re-prompts in this step
    started: bool = False
    finished: bool = False
    path: list[str] = field(default_factory=list)  # steps entered, in order


class ScriptBrain:
    """The :class:`~media.agent.interfaces.Brain` that follows a scenario's script.

    ``start``: the welcome message (the event's text, else ``welcome_message``), then the
    start step's line. ``turn``: the first expected answer that matches leads on (its
    ``reply``, then the next step's line); nothing matched: a re-prompt, up to the step's
    ``max_reprompts``, then the ``otherwise`` step. ``silence``: the step's silence line, up
    to ``max_reprompts`` times per step. ``interrupted``: nothing (the person's turn follows).
    A script-less scenario only says the welcome and finishes.
    """

    def __init__(self, script: Mapping[str, Any] | Script | None, *,
                 welcome_message: str = "") -> None:
        self.script = script if isinstance(script, Script) or script is None \
            else parse_script(script)
        self.welcome_message = welcome_message
        self._state = _State()

    @property
    def finished(self) -> bool:
        """The conversation reached its end step (its line has been given)."""
        return self._state.finished

    @property
    def step(self) -> str:
        """The current step's name ("" before the start)."""
        return self._state.step

    @property
    def path(self) -> list[str]:
        """The steps entered so far, in order."""
        return list(self._state.path)

    def expected(self) -> Sequence[str]:
        """The current step's keywords and example answers as a recogniser writes words
        (lower case, no punctuation but apostrophes, numbers in words: ready for a keyword
        list or a grammar); empty when any answer will do, before the start and after the
        end."""
        step = self._current()
        if step is None or self._state.finished:
            return ()
        out: dict[str, None] = {}
        for answer in step.expect:
            for phrase in (*answer.keywords(), hint(answer.example)):
                if phrase:
                    out.setdefault(phrase, None)
        return tuple(out)

    def _current(self) -> Step | None:
        if self.script is None or not self._state.step:
            return None
        return self.script.steps[self._state.step]

    async def respond(self, history: Sequence[Line], event: BrainEvent) -> AsyncIterator[str]:
        """The lines for ``event``, one chunk per line (each ends a sentence). A ``start``
        with a history (an agent taking over a conversation after a failover) replays the
        person's turns without a word, then repeats the current step's line."""
        if event.kind == "start" and not self._state.started and any(
                line.speaker == "person" for line in history):
            lines = self.resume(history)
        else:
            lines = self.lines(event)
        for line in lines:
            yield line + " "

    def resume(self, history: Sequence[Line]) -> list[str]:
        """Take the conversation up where ``history`` left it: the person's turns replayed
        through the script (nothing said), then the current step's line again."""
        self.lines(BrainEvent("start"))
        for line in history:
            if line.speaker == "person" and not self._state.finished:
                self.lines(BrainEvent("turn", line.text))
        step = self._current()
        if self._state.finished or step is None:
            return []
        return [_sentence(step.say)]

    def lines(self, event: BrainEvent) -> list[str]:
        """What the agent says for ``event`` (and the state moves on), synchronously."""
        state = self._state
        if state.finished:
            return []
        if event.kind == "start":
            if state.started:
                return []  # once per conversation
            state.started = True
            out = [_sentence(event.text or self.welcome_message)]
            if self.script is None:
                state.finished = True
            else:
                out += self._enter(self.script.start)
            return [line for line in out if line]
        step = self._current()
        if step is None:
            return []
        if event.kind == "silence":
            if state.silences >= step.max_reprompts or not step.silence:
                return []
            state.silences += 1
            return [_sentence(step.silence)]
        if event.kind != "turn":
            return []  # interrupted: the person's turn comes next
        words = normalise(event.text)
        if step.next and words:
            return self._enter(step.next)
        for answer in step.expect:
            if answer.matches(words):
                logger.debug("script: step %s: %r matched -> %s", step.name, event.text,
                             answer.next)
                return [s for s in (_sentence(answer.reply), *self._enter(answer.next)) if s]
        if state.reprompts < step.max_reprompts:
            line = step.reprompt[state.reprompts % len(step.reprompt)]
            state.reprompts += 1
            return [_sentence(line)]
        logger.info("script: step %s: no answer matched after %d re-prompts, going on to %s",
                    step.name, state.reprompts, step.otherwise)
        return self._enter(step.otherwise)

    def _enter(self, name: str) -> list[str]:
        assert self.script is not None
        step = self.script.steps[name]
        self._state.step = name
        self._state.reprompts = self._state.silences = 0
        self._state.path.append(name)
        if step.end:
            self._state.finished = True
        return [_sentence(step.say)]

    async def aclose(self) -> None:
        """Nothing to release (idempotent)."""


def _sentence(text: str) -> str:
    """``text`` ending as a sentence, so :func:`~media.agent.interfaces.sentences` cuts it
    off on its own."""
    text = text.strip()
    if text and text[-1] not in ".!?…\"')”’":
        text += "."
    return text


def examples(script: Mapping[str, Any]) -> dict[str, list[str]]:
    """The example answers of a script's steps (what a test bot can say), by step."""
    parsed = parse_script(script)
    return parsed.examples() if parsed is not None else {}


def walk(script: Mapping[str, Any], answers: Iterable[str], *,
         welcome_message: str = "") -> list[str]:
    """The agent's lines, in order, when the person says ``answers`` one per turn (stops at
    the end step). For documentation and tests."""
    brain = ScriptBrain(script, welcome_message=welcome_message)
    out = brain.lines(BrainEvent("start"))
    for text in answers:
        if brain.finished:
            break
        out += brain.lines(BrainEvent("turn", text))
    return out
