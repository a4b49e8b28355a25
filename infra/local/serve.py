"""moto server for the local emulator (infra/local/emulator), with one change.

moto 5.2.5 appends every model instance it creates to a class-wide list, for its dashboard,
and never lets go: each TransactWriteItems deep-copies the tables it touches, so under
transactions its memory only grows (GBs in a long `latch dev` session or a large test run).
Latch never reads that list; not keeping it changes nothing an AWS API call can observe.
"""

from moto.core.common_models import BaseModel
from moto.server import main


def _untracked(cls, *args, **kwargs):
    return object.__new__(cls)


BaseModel.__new__ = _untracked

if __name__ == "__main__":
    main()
