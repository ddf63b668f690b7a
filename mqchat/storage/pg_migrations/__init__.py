"""PostgreSQL directory migrations: ``NNNN_name.sql``, applied in order by
:func:`mqchat.storage.postgres.migrate`, each in one transaction with its ``schema_migrations`` row."""
