"""The data directory: created private (0700, our files 0600), and where the secrets the
embedded default generates for itself live (``GATEWAY_JWT_SECRET`` and
``GATEWAY_KEY_HASH_SECRET`` when they are not set)."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from gateway.settings import MIN_SECRET_LENGTH, ConfigError, Settings

DATA_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
OWN_FILES = frozenset({"gateway.db", "gateway.db-wal", "gateway.db-shm", "gateway.db-journal",
                       ".jwt_secret", ".key_hash_secret", "spool"})
"""What the gateway keeps in the data directory: the embedded database (with SQLite's
files beside it), the generated secrets and the writer's crash spool (storage/spool.py)."""

log = logging.getLogger("gateway")


def ensure_secrets(settings: Settings) -> Settings:
    """Fill missing secrets from files in the data directory (created once, mode 0600)."""
    if settings.jwt_secret is not None and settings.key_hash_secret is not None:
        return settings
    if settings.env == "production":  # the validator already refused this; belt and braces
        raise ConfigError("production mode needs GATEWAY_JWT_SECRET and GATEWAY_KEY_HASH_SECRET")
    prepare_data_dir(settings)
    update: dict[str, SecretStr] = {}
    for field in ("jwt_secret", "key_hash_secret"):
        if getattr(settings, field) is None:
            update[field] = SecretStr(_read_or_create_secret(settings.data_dir / f".{field}"))
    return settings.model_copy(update=update)


def _read_or_create_secret(path: Path) -> str:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_text().strip()
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigError(f"{path}: secret file is too short; delete it to regenerate"
                              ) from None
        return value
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), PRIVATE_FILE_MODE)  # os.open's mode went through the umask
        fh.write(value)
    return value


def prepare_data_dir(settings: Settings) -> Path:
    """Create the data directory 0700, or make an existing one of ours 0700; our files 0600.

    The directory holds the password hashes, API key hashes and signing secrets. A
    directory counts as ours when this call creates it, when it is the default location,
    or when it holds nothing but our files; a directory the user pointed at that also
    holds other things is left as it is (with a warning), only our files in it change.
    """
    path = settings.data_dir
    try:
        path.mkdir(parents=True, mode=DATA_DIR_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            if "data_dir" not in settings.model_fields_set or _holds_only_our_files(path):
                _tighten(path, DATA_DIR_MODE, mode)
            else:
                log.warning("data directory %s is open to other users (mode %03o) and also "
                            "holds files that are not the gateway's, so it is left as it is; "
                            "the gateway's own files in it are 0600", path, mode)
    else:
        os.chmod(path, DATA_DIR_MODE)  # mkdir's mode went through the umask
    for name in OWN_FILES:
        try:
            info = (path / name).stat()
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            private = DATA_DIR_MODE if stat.S_ISDIR(info.st_mode) else PRIVATE_FILE_MODE
            _tighten(path / name, private, mode)
    return path


def _holds_only_our_files(path: Path) -> bool:
    return all(entry.name in OWN_FILES for entry in path.iterdir())


def _tighten(path: Path, new_mode: int, old_mode: int) -> None:
    os.chmod(path, new_mode)
    log.warning("%s was open to other users (mode %03o); it is now %03o", path, old_mode,
                new_mode)
