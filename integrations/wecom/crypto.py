"""WeCom callback crypto: signature check in constant time, AES decrypt and corp-id check via wechatpy.

WeCom signs ``sha1(sorted([token, timestamp, nonce, encrypt]))`` and encrypts
``random(16) ‖ len(4, big-endian) ‖ msg ‖ corp_id`` with AES-256-CBC (PROTOCOLS.md §1).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time

from wechatpy.crypto import _get_signature
from wechatpy.enterprise.crypto import PrpCrypto
from wechatpy.enterprise.exceptions import InvalidCorpIdException


class SignatureError(Exception):
    """The signature does not match: the request did not come from WeCom (HTTP 403)."""


class CorpIdError(Exception):
    """The message decrypts but belongs to another corp (HTTP 403)."""


class MalformedError(Exception):
    """The body cannot be decoded or decrypted (HTTP 400)."""


class WeComCrypto:
    def __init__(self, token: str, encoding_aes_key: str, corp_id: str) -> None:
        self.token = token
        self.corp_id = corp_id
        self._key = base64.b64decode(encoding_aes_key + "=")
        self._prp = PrpCrypto(self._key)  # holds the AES cipher: built once, a decryptor per message

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return str(_get_signature(self.token, timestamp, nonce, encrypt))

    def verify(self, signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        expected = self.sign(timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureError("bad msg_signature")

    def decrypt(self, encrypt: str) -> str:
        try:
            return str(self._prp.decrypt(encrypt, self.corp_id))
        except InvalidCorpIdException as exc:
            raise CorpIdError("corp id mismatch") from exc
        except (ValueError, binascii.Error, UnicodeDecodeError, IndexError, TypeError) as exc:
            raise MalformedError(f"cannot decrypt: {type(exc).__name__}") from exc

    def encrypt(self, plaintext: str) -> str:
        return str(self._prp.encrypt(plaintext, self.corp_id).decode())

    def encrypt_reply(self, xml: str, nonce: str | None = None, timestamp: str | None = None) -> str:
        """An encrypted passive reply envelope (WC-doc 90241)."""
        nonce = nonce or secrets.token_hex(8)
        timestamp = timestamp or str(int(time.time()))
        encrypt = self.encrypt(xml)
        signature = self.sign(timestamp, nonce, encrypt)
        return (
            f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt><MsgSignature><![CDATA[{signature}]]></MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>"
        )
