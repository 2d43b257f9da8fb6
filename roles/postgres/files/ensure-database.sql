-- Creates the LLM Engine login and database, or brings them back to the wanted state. Safe to
-- run any number of times. psql variables: app_user, app_db, app_password_file.
\set ON_ERROR_STOP on
-- Keep the password out of the server log, whatever the log settings are.
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';
\set app_password `cat :'app_password_file'`

SELECT format('CREATE ROLE %I LOGIN', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'app_password';
\unset app_password

SELECT format('CREATE DATABASE %I OWNER %I', :'app_db', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = :'app_db') \gexec
ALTER DATABASE :"app_db" OWNER TO :"app_user";
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;

\connect :"app_db"
-- LLM Engine's migrations create their own schemas; the owner of the database may do so.
ALTER SCHEMA public OWNER TO :"app_user";
