"""Lucent workstation (PySide6 desktop app; reaches the server only through lucent.api.client)."""
