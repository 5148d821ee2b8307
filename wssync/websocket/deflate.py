"""permessage-deflate (RFC 7692): offer negotiation and per-message (de)compression.

Sans-I/O: parses ``Sec-WebSocket-Extensions`` values, picks the first
acceptable offer, and compresses or decompresses message payloads with
``zlib``.  Decompression is bounded as it runs, so a small "deflate bomb" can
never make us allocate more than the message size limit.  It knows nothing
of frames on the wire or of sockets.
"""

from __future__ import annotations

import zlib
from typing import Dict, List, Optional, Protocol, Tuple

from ..errors import ProtocolError

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"
_PARAMS = ("server_no_context_takeover", "client_no_context_takeover",
           "server_max_window_bits", "client_max_window_bits")
_BITS = {str(n): n for n in range(8, 16)}


class DeflateSettings(Protocol):
    """What the server is willing to do; :class:`wssync.config.Config` is one."""

    compression: bool  # accept offers at all
    compression_window_bits: int  # our window, 9-15
    compression_client_window_bits: int  # the window we ask clients to keep within, 8-15
    compression_level: int  # 0 sends messages uncompressed
    compression_mem_level: int


def parse_offers(values: List[str]) -> List[Tuple[str, Dict[str, Optional[str]]]]:
    """Every extension offer in ``Sec-WebSocket-Extensions`` header values, in order.

    Parameters named twice in one offer make that offer ``None``-valued under
    the key ``""`` so that negotiation declines it.
    """
    offers: List[Tuple[str, Dict[str, Optional[str]]]] = []
    for value in values:
        for item in value.split(","):
            parts = [p.strip(" \t") for p in item.split(";")]
            name = parts[0]
            if not name:
                continue
            params: Dict[str, Optional[str]] = {}
            for part in parts[1:]:
                key, sep, param_value = part.partition("=")
                key = key.strip(" \t")
                val: Optional[str] = None
                if sep:
                    val = param_value.strip(" \t")
                    if len(val) >= 2 and val[0] == val[-1] == '"':
                        val = val[1:-1]
                if key in params or not key:
                    params[""] = None  # malformed: repeated or empty parameter
                params[key] = val
            offers.append((name.lower(), params))
    return offers


class PerMessageDeflate:
    """The negotiated extension for one server-side connection."""

    __slots__ = (
        "_announce_server_bits", "_compressor", "_decompressor", "client_max_window_bits",
        "client_no_context_takeover", "compress_outgoing", "server_max_window_bits",
        "server_no_context_takeover", "settings",
    )

    def __init__(self, settings: DeflateSettings, server_no_context_takeover: bool,
                 client_no_context_takeover: bool, server_max_window_bits: int,
                 client_max_window_bits: int, announce_server_bits: bool = True) -> None:
        self.settings = settings
        self._announce_server_bits = announce_server_bits
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        # zlib cannot deflate with an 8-bit window; when a client insists on it,
        # send messages uncompressed, which RFC 7692 always permits.
        self.compress_outgoing = server_max_window_bits >= 9 and settings.compression_level > 0
        # Created on first use: an idle connection should not hold zlib state.
        self._compressor: Optional[zlib._Compress] = None
        self._decompressor: Optional[zlib._Decompress] = None

    def response_value(self) -> str:
        parts = [EXTENSION]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self._announce_server_bits:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_max_window_bits < 15:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)

    # -- incoming ------------------------------------------------------------------

    def decompress(self, data: bytes, final: bool, limit: int) -> bytes:
        """Inflate one fragment of a compressed message; at most ``limit`` bytes out.

        Raises :class:`ProtocolError` 1009 as soon as the output would pass
        ``limit`` and 1007 (invalid data) for a corrupt stream.
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self.client_max_window_bits)
        if final:
            data += _TAIL
        try:
            out = decompressor.decompress(data, limit + 1)
        except zlib.error as exc:
            raise ProtocolError(1007, f"invalid compressed data: {exc}") from None
        if len(out) > limit or decompressor.unconsumed_tail:
            raise ProtocolError(1009, "message too large once decompressed")
        if final and self.client_no_context_takeover:
            self._decompressor = None
        return out

    # -- outgoing ------------------------------------------------------------------

    def compress(self, data: bytes) -> bytes:
        compressor = self._compressor
        if compressor is None:
            settings = self.settings
            compressor = self._compressor = zlib.compressobj(
                settings.compression_level, zlib.DEFLATED, -self.server_max_window_bits,
                settings.compression_mem_level)
        out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if out.endswith(_TAIL):
            out = out[:-4]
        if self.server_no_context_takeover:
            self._compressor = None
        return out or b"\x00"


def negotiate(values: List[str], settings: DeflateSettings) -> Optional[PerMessageDeflate]:
    """The extension for the first acceptable permessage-deflate offer, or None.

    Offers with unknown, repeated or malformed parameters are declined, as
    RFC 7692 section 5 requires, and the next offer is tried.
    """
    if not settings.compression:
        return None
    for name, params in parse_offers(values):
        if name != EXTENSION or any(key not in _PARAMS for key in params):
            continue
        if any(params.get(flag) is not None for flag in _PARAMS[:2]):
            continue  # the no_context_takeover flags take no value
        server_bits, server_bits_requested = settings.compression_window_bits, False
        if "server_max_window_bits" in params:
            requested = _BITS.get(params["server_max_window_bits"] or "")
            if requested is None:
                continue
            server_bits, server_bits_requested = min(server_bits, requested), True
        client_bits = 15
        if "client_max_window_bits" in params:
            value = params["client_max_window_bits"]
            if value is not None and value not in _BITS:
                continue
            client_bits = min(_BITS[value] if value else 15,
                              settings.compression_client_window_bits)
        return PerMessageDeflate(
            settings,
            server_no_context_takeover="server_no_context_takeover" in params,
            client_no_context_takeover="client_no_context_takeover" in params,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
            announce_server_bits=server_bits_requested,
        )
    return None
