"""The verification suite: pytest-testinfra checks that prove each host of a room ready."""
