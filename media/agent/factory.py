"""Brains, voices and scenarios from the ``[agent]`` settings.

``agent.brain``: ``script`` (:class:`~media.agent.script.ScriptBrain`, the default) or
``openai`` (:class:`~media.agent.llm.LlmBrain`). ``agent.voice``: ``espeak``
(:class:`~media.agent.espeak.EspeakVoice`, the default) or ``azure``
(:class:`~media.agent.azure_tts.AzureVoice`). ``Settings.validate()`` has checked the names
and that URLs and keys are there; what can only be checked here (espeak-ng installed, the
scenario files) raises ``ValueError`` with the reason.

The meeting's :class:`~signaling.protocol.AgentSpec` overrides the scenario's persona where it
says something: a non-empty ``voiceId``, ``language`` or ``welcomeMessage``. The seed's
``voiceProvider`` names a cloud provider; the deployment's ``agent.voice`` is what speaks,
mapping the voice id onto its own voices when it can (docs/agent.md, "Voices").
"""

from __future__ import annotations

from signaling.protocol import AgentSpec
from signaling.scenarios import Scenario, load_scenarios
from signaling.settings import AgentSettings

from .interfaces import Brain, Voice, VoiceSpec
from .script import ScriptBrain, check_script


def scenarios(settings: AgentSettings) -> dict[str, Scenario]:
    """The deployment's scenarios (``agent.scenarios_dir``, else the shipped examples), their
    scripts checked by the script brain. Raises ``ScenarioError`` (a ``ValueError``) naming
    the file and the fault."""
    return load_scenarios(settings.scenarios_dir or None, check_script=check_script)


def voice_spec(scenario: Scenario, spec: AgentSpec | None = None) -> VoiceSpec:
    """Which voice speaks: the meeting's choices over the scenario persona's."""
    persona = scenario.persona
    if spec is None:
        return VoiceSpec(persona.voice_id, persona.voice_provider, persona.language)
    return VoiceSpec(spec.voice_id or persona.voice_id,
                     spec.voice_provider or persona.voice_provider,
                     spec.language or persona.language)


def welcome_message(scenario: Scenario, spec: AgentSpec | None = None) -> str:
    """What the agent says first: the meeting's welcome message, else the persona's."""
    return (spec.welcome_message if spec is not None else "") \
        or scenario.persona.welcome_message


def make_brain(settings: AgentSettings, scenario: Scenario,
               spec: AgentSpec | None = None) -> Brain:
    """A new brain for one meeting (brains keep the conversation's state: one per meeting).
    The ``start`` event may carry the welcome message; the brain knows it either way."""
    welcome = welcome_message(scenario, spec)
    if settings.brain == "script":
        return ScriptBrain(scenario.script, welcome_message=welcome)
    if settings.brain == "openai":
        from .llm import LlmBrain

        return LlmBrain(base_url=settings.llm_base_url, model=settings.llm_model,
                        api_key=settings.llm_api_key,
                        instructions=_instructions(scenario, spec), welcome_message=welcome)
    raise ValueError(f"agent.brain {settings.brain!r} must be script or openai")


def make_voice(settings: AgentSettings) -> Voice:
    """The deployment's voice (one may serve every meeting of a process; each line is its
    own synthesis)."""
    if settings.voice == "espeak":
        from .espeak import EspeakVoice

        return EspeakVoice(rate=settings.espeak_rate)
    if settings.voice == "azure":
        from .azure_tts import AzureVoice

        return AzureVoice(endpoint=settings.azure_endpoint, key=settings.azure_key)
    raise ValueError(f"agent.voice {settings.voice!r} must be espeak or azure")


def _instructions(scenario: Scenario, spec: AgentSpec | None) -> str:
    """The LLM's system prompt: the persona's instructions, its name and the language."""
    persona = scenario.persona
    language = (spec.language if spec is not None and spec.language else persona.language)
    parts = [persona.instructions.strip() or f"You are {persona.name}."]
    parts.append(f"Your name is {spec.name if spec is not None and spec.name else persona.name}."
                 f" Speak {language}. Your words are spoken aloud: short sentences, no "
                 "lists, no markdown, no emoji.")
    return "\n\n".join(parts)
