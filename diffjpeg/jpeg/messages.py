"""libjpeg's own error messages: what the C library writes to the process's stderr, captured.

jpeglib turns libjpeg's fatal errors into ``OSError("reading info of FILE failed")``; the reason
("Bogus Huffman table definition", "Unsupported marker type 0x..") only reaches file descriptor 2.
:func:`captured_stderr` collects it so that the error message can say why.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["captured_stderr"]


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Collect what is written to file descriptor 2 inside the block into the yielded list (one entry per line).

    When the block raises, the text is only in the list (for the error message); when it succeeds,
    the text (libjpeg's warnings) is written back to stderr, so nothing is lost.

    Example:
        >>> with captured_stderr() as lines:  # doctest: +SKIP
        ...     jpeglib.read_dct(path)
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
            if text and not failed:
                os.write(2, text.encode())
