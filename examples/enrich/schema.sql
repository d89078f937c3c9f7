-- The table the enrich example's `store` stage writes (idempotent by event_id).
CREATE TABLE IF NOT EXISTS enrich_leads (
    event_id    text PRIMARY KEY,
    lead_id     text NOT NULL,
    intent_type text NOT NULL,
    priority    text NOT NULL,
    summary     text NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now()
);
