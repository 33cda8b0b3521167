"""A module that blocks while it is imported until the test lets it go (issue 12: importing a
component module must not block the daemon's event loop).

``$ONEIRIC_IMPORT_GATE`` is a directory with two fifos the test made: the module writes a byte
to ``importing`` (the test learns the import has begun) and then reads ``gate`` until the test
writes to it and closes it."""

import os

_gate = os.environ["ONEIRIC_IMPORT_GATE"]
_fd = os.open(os.path.join(_gate, "importing"), os.O_WRONLY)
os.write(_fd, b"i")
os.close(_fd)
with open(os.path.join(_gate, "gate"), "rb") as _fh:
    _fh.read()


class Slow:
    """Imported at last: an ordinary component."""

    def __init__(self, **settings: object) -> None:
        self.settings = settings
