"""Where the master keys of sealed recordings come from: the key provider.

A key provider wraps a new recording's data key under a master key (a key-encryption
key) and unwraps it again to play the recording; it is recorder/media/sealed.py's
KeyWrapper. The one QMS ships, SettingsKeys, holds the master keys of QMS_RECORDING_KEYS
(the environment, or a key file readable by QMS alone) in the process's memory.

The hook for production, a KMS or Vault: QMS_RECORDING_KEY_PROVIDER names another class
with the same three methods, made with no arguments (it reads its own settings). Its
wrap() and unwrap() call the KMS (AWS KMS Encrypt/Decrypt with `context` as the
encryption context, Vault transit's encrypt/decrypt with it as associated data), so the
master key never leaves it, and knows() says which key ids it holds. What it returns from
wrap() must be 60 bytes, the size of a key slot's wrap (12 + 48): a KMS whose ciphertext
is longer needs an envelope of its own, a local AES key it keeps wrapped, or a bigger
slot (a new format version). Master keys are never in the database.
"""

from __future__ import annotations

import functools
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from recorder.media.sealed import KeyWrapper, Sealing

WRAP_NONCE_BYTES = 12


class SettingsKeys:
    """The master keys of QMS_RECORDING_KEYS, by id: AES-256-GCM wraps the data keys."""

    def __init__(self, keys: dict[str, bytes] | None = None) -> None:
        self.keys = dict(settings.QMS_RECORDING_KEYS if keys is None else keys)

    def knows(self, key_id: str) -> bool:
        return key_id in self.keys

    def wrap(self, key_id: str, data_key: bytes, context: bytes) -> bytes:
        # A random 96-bit nonce a wrap (SP 800-38D §8.2.2): a master key wraps far fewer
        # than 2^32 data keys, the bound under which random nonces are allowed.
        nonce = os.urandom(WRAP_NONCE_BYTES)
        return nonce + AESGCM(self.keys[key_id]).encrypt(nonce, data_key, context)

    def unwrap(self, key_id: str, wrapped: bytes, context: bytes) -> bytes:
        nonce, sealed = wrapped[:WRAP_NONCE_BYTES], wrapped[WRAP_NONCE_BYTES:]
        return AESGCM(self.keys[key_id]).decrypt(nonce, sealed, context)


@functools.cache
def key_provider() -> KeyWrapper:
    """The key provider QMS_RECORDING_KEY_PROVIDER names, made once a process."""
    try:
        provider = import_string(settings.QMS_RECORDING_KEY_PROVIDER)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"QMS_RECORDING_KEY_PROVIDER names {settings.QMS_RECORDING_KEY_PROVIDER!r}, "
            f"which cannot be imported ({error})."
        ) from None
    return provider()


def new_recordings_sealing() -> Sealing | None:
    """How new recordings are sealed, or None while encryption is off (no key id set)."""
    key_id = settings.QMS_RECORDING_KEY_ID
    return Sealing(key_provider(), key_id) if key_id else None


@receiver(setting_changed)
def _forget_provider(setting: str, **kwargs: object) -> None:
    # Tests change the keys with override_settings; a provider made before keeps the old.
    if setting.startswith("QMS_RECORDING_KEY"):
        key_provider.cache_clear()
