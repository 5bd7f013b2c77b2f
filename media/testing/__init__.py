"""Support code for tests and benchmarks (like :mod:`aiohttp.test_utils`), not used by the peers.

- :mod:`~media.testing.speech` -- the speech corpus: reference texts, espeak-ng sentences with
  silence around them (needs ``espeak-ng`` and ``sox``), the short-utterance corpus (voices
  taking turns, one short sentence each, over their own noise floor), files as the tap's
  16 kHz PCM;
- :mod:`~media.testing.wer` -- word error rate.
"""
