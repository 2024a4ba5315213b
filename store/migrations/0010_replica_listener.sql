-- The PostgreSQL session (backend pid) of each replica's change listener.
-- A replica that crashed is dead once the database sees that session
-- close, not only once its lease expires: its connections stop counting at
-- once (status, the per-gateway cap), and no request waits for it. NULL: a
-- replica that names none (an older version) is judged by its lease alone.
ALTER TABLE replicas ADD COLUMN listener_pid INTEGER;
