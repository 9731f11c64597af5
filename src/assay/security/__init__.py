"""Security audits of model files (``assay scan``): what a file would run if it were loaded, found without loading it.

:func:`scan_model` scans one model file (every pickle in it, torch.export and TorchScript archives, ONNX
external data and operator domains, a pinned sha256) and returns a :class:`ScanReport`;
:func:`write_scan` writes it as a bundle (``scan.json`` in the evidence ``Section`` shape, ``scan.md``).
"""

from assay.security.scan import ScanFinding, ScanReport, check_scan_output, scan_markdown, scan_model, write_scan

__all__ = ["ScanFinding", "ScanReport", "check_scan_output", "scan_markdown", "scan_model", "write_scan"]
