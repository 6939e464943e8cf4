-- Roles and databases for the compose stack (docker-compose.yml mounts this file into
-- /docker-entrypoint-initdb.d/). The postgres image runs it through psql as the superuser, once,
-- when the data volume is first initialised; it is idempotent all the same.
-- Passwords come from the container's environment (\getenv needs psql >= 15; the image is 16).
\set ON_ERROR_STOP on

\getenv audit_password AUDIT_DB_PASSWORD
\getenv temporal_password TEMPORAL_DB_PASSWORD

\if :{?audit_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'AUDIT_DB_PASSWORD is not set in the postgresql container'; END $$;
\endif
\if :{?temporal_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'TEMPORAL_DB_PASSWORD is not set in the postgresql container'; END $$;
\endif

-- The audit trail: user `crisis` owns database `crisis_audit`; the engine creates its own tables.
SELECT format('CREATE ROLE crisis LOGIN PASSWORD %L', :'audit_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'crisis')\gexec

SELECT 'CREATE DATABASE crisis_audit OWNER crisis'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'crisis_audit')\gexec

-- Temporal: temporalio/auto-setup creates and migrates its own databases (`temporal`,
-- `temporal_visibility`) as user `temporal`, which therefore needs CREATEDB.
SELECT format('CREATE ROLE temporal LOGIN CREATEDB PASSWORD %L', :'temporal_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'temporal')\gexec
