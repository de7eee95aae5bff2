"""The end-to-end flow uses the integration suite's real parts: the Docker engine and the lab image."""

from tests.integration.conftest import docker_client, lab_image, test_base_image  # noqa: F401
