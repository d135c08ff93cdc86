"""Test harness shared by unit, integration and functional tests."""
