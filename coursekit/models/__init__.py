"""Reference models of the course notebooks."""
