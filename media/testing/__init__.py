"""Support code for tests and benchmarks (like :mod:`aiohttp.test_utils`), not used by the peers.

- :mod:`~media.testing.speech` -- the speech corpus: reference texts, espeak-ng sentences with
  silence around them (needs ``espeak-ng`` and ``sox``), files as the tap's 16 kHz PCM;
- :mod:`~media.testing.wer` -- word error rate.
"""
