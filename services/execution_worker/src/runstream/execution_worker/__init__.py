"""script -> sandboxed DuckDB execution -> result."""
