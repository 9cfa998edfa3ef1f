"""The dashboard: server-rendered pages at /ui, filled in by one small script."""
