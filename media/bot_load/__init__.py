"""``connvo-rtc loadtest``: many cheap media bots (headless aiortc peers) against a hub, one report.

(The benchmarks' signalling-only load, websocket clients without media, is
``bench/signaling_load``.)

The file list is the architecture:

- :mod:`~media.bot_load.config` -- :class:`LoadTestConfig` and :class:`Thresholds` (frozen);
- :mod:`~media.bot_load.provision` -- meetings and join tokens through the hub's API (429-aware);
- :mod:`~media.bot_load.plan` -- the schedule, and the JSON-line protocol with bot processes;
- :mod:`~media.bot_load.worker` -- a bot process (``python -m media.bot_load.worker``) running
  :class:`media.bots.Bot` s;
- :mod:`~media.bot_load.pool` -- starting, following and reaping the bot processes;
- :mod:`~media.bot_load.runner` -- :class:`LoadTest`, one run from provisioning to report;
- :mod:`~media.bot_load.report` -- the JSON report (every figure and the raw samples);
- :mod:`~media.bot_load.thresholds`, :mod:`~media.bot_load.table`, :mod:`~media.bot_load.plot`,
  :mod:`~media.bot_load.progress` -- the verdict, the summary table, the PNG, the live line;
- :mod:`~media.bot_load.cli` -- the ``loadtest`` subcommand.
"""

from .config import LoadTestConfig, Thresholds
from .provision import ProvisionError
from .runner import LoadTest, LoadTestInterrupted

__all__ = ["LoadTest", "LoadTestConfig", "LoadTestInterrupted", "ProvisionError", "Thresholds"]
