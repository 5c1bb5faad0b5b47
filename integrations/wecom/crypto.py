"""WeCom callback crypto: signature check in constant time, strict AES decrypt and corp-id check.

WeCom signs ``sha1(sorted([token, timestamp, nonce, encrypt]))`` and encrypts
``random(16) ‖ len(4, big-endian) ‖ msg ‖ corp_id`` with AES-256-CBC, PKCS#7-padded to 32-byte blocks
(PROTOCOLS.md §1). wechatpy signs and encrypts; decryption is done here with ``cryptography`` because wechatpy's
neither checks the padding nor the length field, so a validly signed but malformed ciphertext would surface as an
arbitrary exception (or as a corp-id mismatch) instead of a clean ``MalformedError``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import struct
import time

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.crypto import _get_signature
from wechatpy.enterprise.crypto import PrpCrypto

BLOCK_BITS = 256  # WeCom pads to 32 bytes, not AES's 16
_HEADER = 20  # random(16) ‖ len(4)


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
        self._prp = PrpCrypto(self._key)  # encrypts passive replies (and test callbacks)
        self._cipher = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))  # built once, a decryptor each

    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return str(_get_signature(self.token, timestamp, nonce, encrypt))

    def verify(self, signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        expected = self.sign(timestamp, nonce, encrypt)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise SignatureError("bad msg_signature")

    def decrypt(self, encrypt: str) -> str:
        """The message inside ``encrypt``; ``MalformedError`` for anything but a well-formed frame for our corp."""
        try:
            data = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedError("Encrypt is not base64") from exc
        if not data or len(data) % (BLOCK_BITS // 8):
            raise MalformedError("ciphertext is not whole 32-byte blocks")
        decryptor = self._cipher.decryptor()
        unpadder = padding.PKCS7(BLOCK_BITS).unpadder()
        try:
            plain = unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()
        except ValueError as exc:
            raise MalformedError("bad PKCS#7 padding") from exc
        if len(plain) < _HEADER:
            raise MalformedError("plaintext shorter than its header")
        (length,) = struct.unpack(">I", plain[16:_HEADER])
        if _HEADER + length > len(plain):
            raise MalformedError("message length beyond the plaintext")
        message, receiver = plain[_HEADER : _HEADER + length], plain[_HEADER + length :]
        if not hmac.compare_digest(receiver, self.corp_id.encode()):
            raise CorpIdError("corp id mismatch")
        try:
            return message.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedError("message is not UTF-8") from exc

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
