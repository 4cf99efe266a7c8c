"""Who may open what: API keys, session tokens, OAuth and anonymous callers
(``auth.py``). Used by the HTTP routes (``gateway.api``) and the voice transports
alike, so neither has to import the other."""
