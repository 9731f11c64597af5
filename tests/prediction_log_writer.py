"""A prediction-log writer process for the kill tests and the bench: ``python prediction_log_writer.py STORE ROOT
DURABILITY RATE INTERVAL_MS``. It prints ``ready``, then one line ``i ack_time committed`` after each submit of
row ``ri`` returns (acknowledged), pacing to RATE rows/s. On SIGTERM it stops, prints ``final N`` (rows submitted)
and closes the log (which commits everything), as ``assay serve`` does. STORE ``-`` = the embedded default."""

from __future__ import annotations

import signal
import sys
import time

import numpy as np

from assay.serve.log import PredictionRow, open_log


def main() -> None:
    store, root, durability, rate, interval = sys.argv[1:6]
    log = open_log(None if store == "-" else store, root=root, durability=durability,  # type: ignore[arg-type]
                   commit_interval_ms=float(interval))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    logits = np.linspace(-1, 1, 10, dtype=np.float32)
    print("ready", flush=True)
    pause = 1.0 / float(rate)
    i = 0
    start = time.perf_counter()
    while not stop:
        ticket = log.submit([PredictionRow(f"r{i}", time.time(), "m@1", "primary", f"{i:064x}", logits, 9, 0.2)])
        if ticket is not None:
            ticket.result()
        sys.stdout.write(f"{i} {time.time():.6f} {log.committed}\n")
        sys.stdout.flush()
        i += 1
        delay = start + i * pause - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    print(f"final {i}", flush=True)
    log.close()


if __name__ == "__main__":
    main()
