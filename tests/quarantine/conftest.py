"""The quarantined guest tests use the integration tier's image fixture."""

from tests.integration.conftest import lab_image  # noqa: F401
