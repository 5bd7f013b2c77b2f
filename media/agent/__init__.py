"""The AI persona: a server-side participant that hears, thinks and speaks (issue 18).

``interfaces`` holds the contract every part codes against: the brain (``history, event →
stream of text``), the voice (``text, voice → stream of PCM``) and the conversation's lines.
"""
