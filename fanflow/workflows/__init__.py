"""Workflows that ship with fanflow, installed under the ``fanflow.workflows`` entry-point
group (``fanflow run video-entity-tagging``)."""

from pathlib import Path

video_entity_tagging = Path(__file__).with_name("video_entity_tagging.yaml")
