"""What a resume checks before it continues a search: the spec it started with (an edited
``spec.yaml`` is refused unless ``--force-new-spec``) and the images it trained on (an image
folder whose files changed is refused likewise)."""

from __future__ import annotations

import logging

from ofasearch.config import Spec
from ofasearch.data import DataFingerprint, data_fingerprint
from ofasearch.errors import SpecError
from ofasearch.results.folder import SPEC_FILE
from ofasearch.search.state import read_state, update_state
from ofasearch.utils.storage import Location, location_digest

__all__ = ["SPEC_HASH_KEY", "check_same_data", "spec_hash_to_record"]

logger = logging.getLogger(__name__)

SPEC_HASH_KEY = "spec_hash"  # state.json: SHA-256 of spec.yaml as the search started (resume checks it)


def spec_hash_to_record(folder: Location, *, force_new_spec: bool) -> str | None:
    """A resume runs the spec the search started with: an edited ``spec.yaml`` is a SpecError
    unless ``force_new_spec``. Returns the hash ``state.json`` must now hold (None: it holds it)."""
    path = folder / SPEC_FILE
    if not path.is_file():
        return None  # not a results folder: load_folder_spec says so
    now, started = location_digest(path), read_state(folder).get(SPEC_HASH_KEY)
    if started is None or started == now:
        return None if started == now else now  # folders of earlier versions: accepted, recorded
    if not force_new_spec:
        raise SpecError(
            [
                f"{path}: edited since the search started; undo the edit (or start a new search: "
                f"ofasearch run {path}), or resume with --force-new-spec to run what is left with the edited spec"
            ]
        )
    logger.warning(
        f"{path}: edited since the search started; --force-new-spec: what is left runs with the edited spec, "
        "trials already finished keep the old one"
    )
    return now


def check_same_data(spec: Spec, folder: Location, *, force_new_spec: bool) -> None:
    """A resume trains on the images the search started with: an image folder whose files
    changed is a SpecError naming the change, unless ``force_new_spec`` (then recorded anew)."""
    started = read_state(folder).get("data")
    if started is None:
        return  # a registry dataset, or a folder of an earlier version
    now = data_fingerprint(spec.data)
    if now is not None and now.digest == started.get("digest"):
        return
    then = DataFingerprint(**started).describe()
    current = now.describe() if now else "not a folder"
    changed = f"data.root {spec.data.root}: its images changed since the search started ({then}; now {current})"
    if not force_new_spec:
        raise SpecError(
            [
                f"{changed}; the teachers and finished trials belong to the old images: put them back, start a "
                "new search, or resume with --force-new-spec to run what is left on the new images"
            ]
        )
    logger.warning(f"{changed}; --force-new-spec: what is left runs on the new images, finished trials keep the old")
    update_state(folder, data=now.as_dict() if now else None)
