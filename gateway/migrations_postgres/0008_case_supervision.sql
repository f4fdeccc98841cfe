-- Supervision (督办) and on-site reports (到场), see docs/supervision.md.
-- supervision_level: the highest escalation level the case has reached (0: not supervised);
-- it only ever goes up, so no level is announced twice, across restarts too.
-- on_site_due_ms: an urgent case's crew must report on site by then (set when the team
-- accepts; cleared when it reports on site or when the lateness has been escalated).
-- on_site_ms: when the crew reported on site since the last acceptance.
ALTER TABLE cases ADD COLUMN supervision_level BIGINT NOT NULL DEFAULT 0;
ALTER TABLE cases ADD COLUMN on_site_due_ms BIGINT;
ALTER TABLE cases ADD COLUMN on_site_ms BIGINT;
