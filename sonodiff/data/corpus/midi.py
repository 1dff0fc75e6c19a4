"""A minimal Standard MIDI File (format 1) writer and the General MIDI names the corpus uses.

Notes are plain tuples ``(onset_beats, duration_beats, pitch, velocity)`` per channel; the writer
turns them into one track per channel at a fixed tempo. Written here (about 60 lines) so rendering
needs no MIDI library; the bytes depend only on the notes, so they are deterministic.
Reference: MIDI 1.0 Detailed Specification, Standard MIDI Files 1.0 (MIDI Manufacturers Association).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["GM_DRUMS", "GM_PROGRAMS", "PPQ", "Part", "notes_in_seconds", "write_midi"]

PPQ = 480  # ticks per quarter note

# General MIDI level 1 programs (0-based) used by the corpus: caption name -> program number.
GM_PROGRAMS: dict[str, int] = {
    "piano": 0, "bright piano": 1, "electric piano": 4, "harpsichord": 6, "celesta": 8,
    "glockenspiel": 9, "music box": 10, "vibraphone": 11, "marimba": 12, "xylophone": 13,
    "tubular bells": 14, "church organ": 19, "accordion": 21, "harmonica": 22,
    "nylon guitar": 24, "steel guitar": 25, "electric guitar": 27, "acoustic bass": 32,
    "electric bass": 33, "violin": 40, "viola": 41, "cello": 42, "contrabass": 43, "harp": 46,
    "timpani": 47, "string ensemble": 48, "choir": 52, "trumpet": 56, "trombone": 57, "tuba": 58,
    "french horn": 60, "brass section": 61, "soprano sax": 64, "alto sax": 65, "tenor sax": 66,
    "oboe": 68, "english horn": 69, "bassoon": 70, "clarinet": 71, "piccolo": 72, "flute": 73,
    "recorder": 74, "pan flute": 75, "ocarina": 79, "square lead": 80, "sawtooth lead": 81,
    "warm pad": 89, "sitar": 104, "banjo": 105, "kalimba": 108, "bagpipe": 109, "fiddle": 110,
    "steel drums": 114,
}

# General MIDI percussion key map (channel 10) used by the drum patterns.
GM_DRUMS: dict[str, int] = {
    "kick": 36, "snare": 38, "clap": 39, "closed hihat": 42, "pedal hihat": 44, "open hihat": 46,
    "low tom": 45, "mid tom": 47, "high tom": 50, "crash": 49, "ride": 51, "cowbell": 56,
    "tambourine": 54, "shaker": 70, "claves": 75, "low conga": 64, "high conga": 63,
}


@dataclass(frozen=True)
class Part:
    """One instrument part: ``program`` (0-127, ignored for drums), ``drums`` uses channel 10,
    ``notes`` is a tuple of ``(onset_beats, duration_beats, pitch, velocity)``, ``reverb`` the channel's
    reverb send (controller 91, 0-127) set at the start, or None to leave the synthesizer's default."""

    program: int
    notes: tuple[tuple[float, float, int, int], ...]
    drums: bool = False
    reverb: int | None = None


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(reversed(out))


def _track(events: list[tuple[int, int, bytes]]) -> bytes:
    # events: (tick, order, message); note-offs (order 0) sort before note-ons (order 1) at one tick.
    data = bytearray()
    last = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1], e[2])):
        data += _varlen(tick - last) + msg
        last = tick
    data += b"\x00\xff\x2f\x00"  # end of track
    return b"MTrk" + struct.pack(">I", len(data)) + bytes(data)


def write_midi(parts: list[Part], tempo_bpm: float) -> bytes:
    """Standard MIDI File bytes for ``parts`` at ``tempo_bpm`` quarter notes per minute."""
    if not 10 <= tempo_bpm <= 400:
        raise ValueError(f"tempo_bpm must be in [10, 400], got {tempo_bpm}")
    usec = int(round(60_000_000 / tempo_bpm))
    tracks = [_track([(0, 0, b"\xff\x51\x03" + usec.to_bytes(3, "big"))])]
    melodic = 0
    for part in parts:
        if part.drums:
            ch = 9
        else:
            ch = melodic if melodic < 9 else melodic + 1
            melodic += 1
        if ch > 15:
            raise ValueError(f"at most 15 melodic parts fit in one MIDI file, got {melodic}")
        ev: list[tuple[int, int, bytes]] = []
        if not part.drums:
            ev.append((0, 0, bytes([0xC0 | ch, part.program & 0x7F])))
        if part.reverb is not None:
            if not 0 <= part.reverb <= 127:
                raise ValueError(f"reverb send must be in [0, 127], got {part.reverb}")
            ev.append((0, 0, bytes([0xB0 | ch, 91, part.reverb])))
        for onset, dur, pitch, vel in part.notes:
            if not (0 <= pitch <= 127 and 1 <= vel <= 127 and dur > 0 and onset >= 0):
                raise ValueError(f"bad note (onset={onset}, dur={dur}, pitch={pitch}, vel={vel})")
            t0 = int(round(onset * PPQ))
            t1 = max(t0 + 1, int(round((onset + dur) * PPQ)))
            ev.append((t0, 1, bytes([0x90 | ch, pitch, vel])))
            ev.append((t1, 0, bytes([0x80 | ch, pitch, 0])))
        tracks.append(_track(ev))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), PPQ)
    return header + b"".join(tracks)


def notes_in_seconds(parts: list[Part], tempo_bpm: float) -> list[tuple[float, float, int]]:
    """``[(onset_s, offset_s, pitch)]`` of the melodic notes of ``parts``, sorted by onset."""
    spb = 60.0 / tempo_bpm
    out = [(on * spb, (on + d) * spb, p) for part in parts if not part.drums for on, d, p, _ in part.notes]
    return sorted(out)
