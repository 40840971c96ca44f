"""Writes 8-bit grey PNG files with the standard library only (for the CLI tests' image trees)."""
import struct
import zlib


def png(path, w, h, pixels):
    """Writes pixels (h rows of w values in 0..255, row-major) to path as an 8-bit grey PNG."""
    raw = b"".join(b"\x00" + bytes(pixels[y * w:(y + 1) * w]) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
