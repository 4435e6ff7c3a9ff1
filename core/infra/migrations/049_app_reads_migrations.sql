-- The application role may see which migrations are applied (never apply one): a process that
-- migrates with DATABASE_URL alone (a CLI, an older launcher) then finds nothing to do instead
-- of failing, and fails by name only when something is pending.
GRANT SELECT ON schema_migrations TO pennant_app;
