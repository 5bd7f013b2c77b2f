"""Scenarios: the deployment's conversation partners for meetings created from a scenario.

A scenario is one YAML file (``<id>.yaml``) in ``agent.scenarios_dir`` (empty: the examples
shipped in ``signaling/example_scenarios/``). docs/agent.md documents the format::

    id: interview-practice              # optional; the file's name without .yaml otherwise
    title: Job interview practice
    description: A friendly recruiter asks three questions.
    call_duration: 10                   # minutes; the meeting's default maxDurationMinutes
    persona:
      name: Alex                        # shown as the agent's participant name
      instructions: You are Alex, ...   # the system prompt of the LLM brain
      welcome_message: Hello, I am Alex. Shall we begin?
      language: English
      voice_id: ""                      # default voice for the provider
      voice_provider: azure
    script:                             # the embedded brain's conversation (media.agent.script)
      ...

``script`` is checked by the script brain (:func:`media.agent.script.check_script`) when the
scenarios load, so a broken file is an error at start, not in a meeting.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

logger = logging.getLogger(__name__)

#: The examples shipped with connvo-rtc.
SHIPPED = Path(__file__).with_name("example_scenarios")
#: A scenario id: what ``createMeetingFromScenario`` takes as ``scenarioId``.
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
#: Largest scenario file read (bytes).
MAX_FILE_BYTES = 256 * 1024


class ScenarioError(ValueError):
    """A scenario file that cannot be used (the message names the file and the fault)."""


class Persona(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    instructions: str = ""
    welcome_message: str = ""
    language: str = "English"
    voice_id: str = ""
    voice_provider: Literal["elevenlabs", "azure", "cartesia"] = "azure"


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str = ""
    title: str
    description: str = ""
    #: Minutes; the meeting's default ``maxDurationMinutes`` (the seed: "scenario's
    #: call_duration or 30").
    call_duration: int = 30
    persona: Persona
    #: The embedded brain's conversation graph, as written (checked by the script brain).
    script: dict[str, Any] = msgspec.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What ``meetings/scenarios/listScenarios`` shows of it."""
        return {"scenarioId": self.id, "title": self.title, "description": self.description,
                "personaName": self.persona.name, "language": self.persona.language,
                "callDuration": self.call_duration}


#: Checks a scenario's ``script`` (raises ``ValueError`` with what is wrong); set by the
#: script brain so that signaling does not import the media stack.
ScriptCheck = Callable[[Mapping[str, Any]], None]


def load_scenarios(directory: str | Path | None = None, *,
                   check_script: ScriptCheck | None = None) -> dict[str, Scenario]:
    """Every ``*.yaml`` scenario in ``directory`` (default: the shipped examples), by id.
    Raises :class:`ScenarioError` on the first file that is not a valid scenario."""
    root = Path(directory) if directory else SHIPPED
    if not root.is_dir():
        raise ScenarioError(f"agent.scenarios_dir {str(root)!r} is not a directory")
    found: dict[str, Scenario] = {}
    for path in sorted(root.glob("*.yaml")):
        scenario = load_scenario(path, check_script=check_script)
        if scenario.id in found:
            raise ScenarioError(f"{path}: scenario id {scenario.id!r} is used twice")
        found[scenario.id] = scenario
    return found


def load_scenario(path: Path, *, check_script: ScriptCheck | None = None) -> Scenario:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ScenarioError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping (title, persona, script, ...)")
    raw.setdefault("id", path.stem)
    try:
        scenario = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    if not re.match(ID_PATTERN, scenario.id):
        raise ScenarioError(f"{path}: id {scenario.id!r} must match {ID_PATTERN}")
    if not scenario.persona.name.strip():
        raise ScenarioError(f"{path}: persona.name is empty")
    if not 1 <= scenario.call_duration <= 1440:
        raise ScenarioError(f"{path}: call_duration must be 1..1440 minutes")
    if check_script is not None:
        try:
            check_script(scenario.script)
        except ValueError as exc:
            raise ScenarioError(f"{path}: script: {exc}") from None
    return scenario
