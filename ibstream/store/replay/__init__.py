"""Replay a recording through the live server's endpoints (`ibstream replay DIR`).

`Recording` indexes a recording's parts; `ReplayHub` serves it to the server's subscribers
as the live hub serves IB; `ibstream.server.run.start_replay_server` runs the app over it.
"""

from ibstream.store.replay.hub import ReplayHub, ReplaySource
from ibstream.store.replay.recording import Recording, RecordingError

__all__ = ["Recording", "RecordingError", "ReplayHub", "ReplaySource"]
