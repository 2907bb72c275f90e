"""Adapters: implementations of the async SSPI contract behind one interface (api.py)."""
