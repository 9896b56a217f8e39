-- The billing ledger. Portable SQL: the same file runs on SQLite and PostgreSQL.
-- Instants are unix seconds (BIGINT); money and quantities are decimal strings (TEXT)
-- so that no backend ever turns them into floats.

CREATE TABLE ledger_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per fact, keyed by the fact's own key: replaying a fact is a no-op.
CREATE TABLE facts (
    fact_key TEXT PRIMARY KEY,
    kind     TEXT NOT NULL,
    -- lease id, pool, or rate card name@version
    subject  TEXT NOT NULL,
    -- tenant of the lease; NULL for facts every tenant's bill reads (pools, rate cards)
    tenant   TEXT,
    at_unix  BIGINT NOT NULL,
    body     TEXT NOT NULL
);

-- A lease is admitted once and ends once; a card version is published once. The
-- database enforces it even when two operator replicas race.
CREATE UNIQUE INDEX facts_one_admission ON facts (subject) WHERE kind = 'leaseAdmitted';
CREATE UNIQUE INDEX facts_one_end ON facts (subject) WHERE kind = 'leaseEnded';
CREATE UNIQUE INDEX facts_one_card_version ON facts (subject) WHERE kind = 'rateCard';
CREATE INDEX facts_by_tenant ON facts (tenant);
CREATE INDEX facts_by_kind_subject ON facts (kind, subject);

-- One bill per tenant per period.
CREATE TABLE bills (
    tenant     TEXT NOT NULL,
    period     TEXT NOT NULL,
    state      TEXT NOT NULL,
    currency   TEXT NOT NULL,
    total      TEXT NOT NULL,
    as_of_unix BIGINT NOT NULL,
    -- the bill without its lines, as JSON
    header     TEXT NOT NULL,
    PRIMARY KEY (tenant, period)
);

CREATE TABLE bill_lines (
    tenant        TEXT NOT NULL,
    period        TEXT NOT NULL,
    line_no       BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    lease         TEXT NOT NULL,
    correction_of TEXT,
    amount        TEXT NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (tenant, period, line_no)
);
