"""Experiments: the server with one thing changed, and in-process costs (throwaway code)."""
