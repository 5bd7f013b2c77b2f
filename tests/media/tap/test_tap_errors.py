"""The tap's errors in the media error tree: one root, distinct codes, and the built-in classes
(and import paths) callers relied on before the tree existed."""

from __future__ import annotations

import pytest

from media import errors
from media.tap import pocketsphinx_backend, transcriber
from media.tap.config import TapConfig
from media.tap.procpool import ProcessTranscriber
from tests.media.tap.test_transcriber import COUNTING


def test_tap_errors_share_one_root_and_have_distinct_codes() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.TapError)]
    assert len(classes) >= 6
    assert not any(issubclass(c, errors.PeerClientError) for c in classes)
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))


def test_tap_errors_keep_their_built_in_classes_and_old_homes() -> None:
    assert transcriber.UnknownTranscriberError is errors.UnknownTranscriberError
    assert pocketsphinx_backend.EngineBusyError is errors.EngineBusyError
    for cls, builtin in [(errors.UnknownTranscriberError, ValueError),
                         (errors.TapConfigError, ValueError),
                         (errors.TranscriberNotRunningError, RuntimeError),
                         (errors.RecogniserStartError, RuntimeError),
                         (errors.EngineBusyError, RuntimeError)]:
        assert issubclass(cls, builtin), cls


def test_bad_settings_and_a_stream_before_start_raise_tap_errors() -> None:
    with pytest.raises(errors.TapConfigError, match="processes"):
        ProcessTranscriber(COUNTING, processes=0)
    with pytest.raises(errors.TapConfigError, match="max_backlog_s"):
        TapConfig(max_backlog_s=0)
    with pytest.raises(errors.TranscriberNotRunningError):
        ProcessTranscriber(COUNTING).open_stream(lambda _result: None)
