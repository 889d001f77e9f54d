"""The Hugging Face hub: download an exported folder by its repo id, upload a folder to a repo. Nothing else.

What an export holds is `pdiff.pretrained`; exporting a run is `pdiff.share`. A repo id is downloaded through
`huggingface_hub.snapshot_download`, which serves the local cache offline (with HF_HUB_OFFLINE=1, only it).
"""

from __future__ import annotations

from pathlib import Path

import httpx2  # the HTTP client of huggingface_hub; its network errors are no OSErrors
import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

from .errors import HubError, first_line
from .provenance import version

LIBRARY = "pdiff"
NETWORK_ERRORS = (OSError, HfHubHTTPError, httpx2.TransportError)


def is_repo_id(name: str) -> bool:
    """Whether `name` can be a hub repo id ("user/name" or "name")."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def download(name_or_path: str | Path, repo_type: str = "model", revision: str | None = None) -> Path:
    """The local folder of an export: `name_or_path` itself if it is a folder, else the hub repo of that id,
    downloaded (or taken from the cache; with HF_HUB_OFFLINE=1 only from the cache)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    name = str(name_or_path)
    if not is_repo_id(name):
        raise HubError(f"{name} is neither a folder nor a hub repo id (user/name): give an exported folder "
                       "(`pdiff export`) or a repo id")
    try:
        return Path(huggingface_hub.snapshot_download(name, repo_type=repo_type, revision=revision,
                                                      library_name=LIBRARY, library_version=version()))
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE=1 forbids downloading it" if huggingface_hub.constants.HF_HUB_OFFLINE
               else "the hub cannot be reached")
        raise HubError(f"{name} is no local folder, and the hub {repo_type} repo {name} is not in the local cache "
                       f"while {why}: check the path, or download it once on a connected machine") from None
    except RepositoryNotFoundError:
        raise HubError(f"{name} is no local folder, and the hub has no {repo_type} repo {name} that this token may "
                       "read: check the path or id, or log in with `hf auth login` if it is private") from None
    except HfHubHTTPError as e:
        raise HubError(f"downloading {name} failed ({first_line(e)}): check the repo id and revision") from None


def check_upload(repo_id: str, token: str | None = None) -> str:
    """Refuse, before any work, an upload that cannot happen (a bad repo id, offline, no token); returns the
    token to upload with."""
    if not is_repo_id(repo_id) or "/" not in repo_id:
        raise HubError(f"{repo_id!r} is not a hub repo id: write it as user/name")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise HubError("HF_HUB_OFFLINE=1 forbids uploading: push from a machine with a network, without "
                       "HF_HUB_OFFLINE set (`pdiff export` writes the same folder offline)")
    token = token or huggingface_hub.get_token()
    if token is None:
        raise HubError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN, then push again")
    return token


def upload(folder: Path, repo_id: str, repo_type: str, message: str, private: bool = False,
           token: str | None = None) -> str:
    """Upload `folder` to the hub repo `repo_id` (a "model" or "dataset" repo), created if missing; returns its URL."""
    token = check_upload(repo_id, token)
    api = huggingface_hub.HfApi(token=token, library_name=LIBRARY, library_version=version())
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, commit_message=message)
    except NETWORK_ERRORS as e:
        raise HubError(f"uploading to the hub failed ({type(e).__name__}: {first_line(e)}): check the network "
                       f"and that your token may write to {repo_id}") from None
    return str(url)
