"""Image maps and making sure an image is there."""

from __future__ import annotations

import docker
import pytest

from circlet.executors.base import ExecutorError
from circlet.executors.images import ensure_image, image_map, map_image


def test_image_map_overlays_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCLET_IMAGE_MAP", "cimg/python:3.12=local/a, cimg/node:20=local/b")
    assert image_map({"cimg/node:20": "local/c"}) == {
        "cimg/python:3.12": "local/a",
        "cimg/node:20": "local/c",
    }


def test_a_bad_image_map_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCLET_IMAGE_MAP", "cimg/python:3.12")
    with pytest.raises(ExecutorError, match=r"^CIRCLET_IMAGE_MAP: .*is not FROM=TO"):
        image_map()


def test_map_image() -> None:
    mapping = {"cimg/python:3.12.0": "local:1", "postgres:14": "local:2"}
    assert map_image("cimg/python:3.12.0", mapping) == "local:1"
    assert map_image("docker.io/cimg/python:3.12.0", mapping) == "local:1"
    assert map_image("docker.io/library/postgres:14", mapping) == "local:2"
    assert map_image("cimg/python:3.11", mapping) == "cimg/python:3.11"


@pytest.mark.docker
def test_ensure_image_uses_the_map_and_reports_the_local_image() -> None:
    api = docker.APIClient()
    try:
        found = ensure_image(
            api,
            "cimg/python:3.11",
            {"cimg/python:3.11": "circlet/cimg-python:3.11"},
            docker_host="unix:///var/run/docker.sock",
        )
        assert found.requested == "cimg/python:3.11"
        assert found.local == "circlet/cimg-python:3.11"
        assert found.short_id.startswith("sha256:")
        assert found.config["User"] == "circleci"
        assert not found.pulled
        with pytest.raises(ExecutorError) as caught:
            ensure_image(
                api,
                "cimg/python:3.12.0",
                {"cimg/python:3.12.0": "circlet/not-built:1"},
                docker_host="unix:///var/run/docker.sock",
                pull_timeout=10,
            )
        assert str(caught.value).startswith(
            "image cimg/python:3.12.0 (mapped to circlet/not-built:1) is not available locally"
        )
        assert "--image cimg/python:3.12.0=LOCAL_IMAGE" in str(caught.value)
    finally:
        api.close()
