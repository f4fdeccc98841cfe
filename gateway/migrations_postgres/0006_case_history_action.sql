-- What each history entry records: an action name (dispatch, accept, return, resolve, verify,
-- rework, close, void, reopen), `register`, `update` (the incident changed, state unchanged) or
-- `self_recover`; further kinds (on_site, supervise) record events that leave the state as it
-- is. Entries written before this column existed get the action their states imply.
ALTER TABLE case_history ADD COLUMN action TEXT NOT NULL DEFAULT '';

UPDATE case_history SET action = CASE
    WHEN from_state IS NULL THEN 'register'
    WHEN from_state = to_state THEN 'update'
    WHEN to_state = 'dispatched' AND from_state IN ('resolved', 'verified') THEN 'rework'
    WHEN to_state = 'dispatched' AND from_state = 'closed' THEN 'reopen'
    WHEN to_state = 'dispatched' THEN 'dispatch'
    WHEN to_state = 'accepted' THEN 'accept'
    WHEN to_state = 'returned' THEN 'return'
    WHEN to_state = 'resolved' THEN 'resolve'
    WHEN to_state = 'verified' AND from_state <> 'resolved' THEN 'self_recover'
    WHEN to_state = 'verified' THEN 'verify'
    WHEN to_state = 'closed' THEN 'close'
    WHEN to_state = 'voided' THEN 'void'
    ELSE 'update'
END;
