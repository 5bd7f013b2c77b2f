"""``connvo-rtc loadtest``: many cheap bots against a hub, one report.

The file list is the architecture:

- :mod:`~media.loadtest.config` -- :class:`LoadTestConfig` and :class:`Thresholds` (frozen);
- :mod:`~media.loadtest.provision` -- meetings and join tokens through the hub's API (429-aware);
- :mod:`~media.loadtest.plan` -- the schedule, and the JSON-line protocol with bot processes;
- :mod:`~media.loadtest.worker` -- a bot process (``python -m media.loadtest.worker``) running
  :class:`media.bots.Bot` s;
- :mod:`~media.loadtest.pool` -- starting, following and reaping the bot processes;
- :mod:`~media.loadtest.runner` -- :class:`LoadTest`, one run from provisioning to report;
- :mod:`~media.loadtest.report` -- the JSON report (every figure and the raw samples);
- :mod:`~media.loadtest.thresholds`, :mod:`~media.loadtest.table`, :mod:`~media.loadtest.plot`,
  :mod:`~media.loadtest.progress` -- the verdict, the summary table, the PNG, the live line;
- :mod:`~media.loadtest.cli` -- the ``loadtest`` subcommand.
"""

from .config import LoadTestConfig, Thresholds
from .provision import ProvisionError
from .runner import LoadTest, LoadTestInterrupted

__all__ = ["LoadTest", "LoadTestConfig", "LoadTestInterrupted", "ProvisionError", "Thresholds"]
