"""TensorFlow's start-up log wall stays off the terminal unless INTENTFLOW_LOG_LEVEL=debug.

TensorFlow's C++ side (oneDNN, CUDA probes, CPU features, absl) logs to file descriptor 2, not
through Python. ``TF_CPP_MIN_LOG_LEVEL`` silences what it logs once running, but only if set
before the import; and the lines logged while its libraries load, before
``absl::InitializeLog()``, ignore it (a known absl behaviour), so the import itself runs with
descriptor 2 sent to a temporary file. That file is replayed if the import fails, so a broken
installation still explains itself.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

TF_ENV = "TF_CPP_MIN_LOG_LEVEL"  # 0: everything, 3: fatal only


@contextmanager
def quiet_tensorflow_import(log_level: str) -> Iterator[None]:
    """Import TensorFlow, Keras and tf2onnx inside this block.

    ``log_level`` is the settings' (``load_settings().log_level``): at ``debug`` every line
    stays; otherwise the native log lines are hidden. An explicit ``TF_CPP_MIN_LOG_LEVEL`` in
    the environment wins over the default chosen here.
    """
    debug = log_level == "debug"
    os.environ.setdefault(TF_ENV, "0" if debug else "3")
    if debug or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.flush()
            os.write(2, captured.read())
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
    for name in ("tensorflow", "absl", "tf2onnx"):  # their Python loggers, from here on
        logging.getLogger(name).setLevel(logging.ERROR)
