"""One node's live sessions, and several nodes as one service.

- ``sessions``: this process's live sessions (admission, readiness, drain, ending one).
- ``events``: what one node tells the others (a key revoked, an assistant deleted, a
  session ended from the API), pure.
- ``bus``: how the events travel (in-process for one node, Redis pub/sub for several).
- ``directory``: every node's live sessions in Redis, with dead nodes expiring.
- ``node``: the wiring the app holds (``app.state.cluster``).
"""
