"""SQL persistence: tables, the async engine, repositories, API keys and migrations glue."""
