"""A module that blocks while it is imported until the test lets it go (issue 12: importing a
component module must not block the daemon's event loop).

``$ONEIRIC_IMPORT_GATE`` is a directory with fifos the test made: the module writes a byte to
``importing`` (the test learns the import has begun), reads ``gate`` until the test writes to it
and closes it, then writes a byte to ``done`` (its code has run to the end)."""

import os

_gate = os.environ["ONEIRIC_IMPORT_GATE"]
_fd = os.open(os.path.join(_gate, "importing"), os.O_WRONLY)
os.write(_fd, b"i")
os.close(_fd)
with open(os.path.join(_gate, "gate"), "rb") as _fh:
    _fh.read()
_fd = os.open(os.path.join(_gate, "done"), os.O_WRONLY)
os.write(_fd, b"d")  # its code has run to the end
os.close(_fd)


class Slow:
    """Imported at last: an ordinary component."""

    def __init__(self, **settings: object) -> None:
        self.settings = settings
