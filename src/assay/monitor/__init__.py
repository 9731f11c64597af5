"""``assay monitor``: drift, label-free accuracy and calibrated alarms on the prediction log, window by window.

Public names: :class:`Monitor` (``update(frame)``, ``update_batch(LogBatch)``, ``flush``, ``snapshot()``,
``save``), :class:`MonitorSettings`, :class:`WindowResult` / :class:`TestResult`, :class:`LogBatch`,
:func:`load_monitor_reference`, :func:`write_monitor_report`, :func:`parse_window`.
"""

from assay.monitor.evaluate import TestResult, WindowResult
from assay.monitor.monitor import SNAPSHOT_SCHEMA, Monitor
from assay.monitor.report import MONITOR_KIND, write_monitor_report
from assay.monitor.settings import MonitorSettings, parse_window
from assay.monitor.source import MonitorReference, load_monitor_reference
from assay.monitor.state import LogBatch

__all__ = ["MONITOR_KIND", "SNAPSHOT_SCHEMA", "LogBatch", "Monitor", "MonitorReference", "MonitorSettings",
           "TestResult", "WindowResult", "load_monitor_reference", "parse_window", "write_monitor_report"]
