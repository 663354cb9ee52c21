"""The OCI documents: config.json parsed into records, schema validation, defaults, coverage."""
