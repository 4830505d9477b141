"""The two facts about an ELF file that choosing a debug file needs: its GNU
build-id and whether it carries DWARF line information.

Reads section headers (present in binaries, shared objects and split-off
.debug files alike) and falls back to PT_NOTE program headers when a file has
no section headers. 32/64-bit and either byte order; nothing is executed and
only headers and notes are read.
"""

import struct
from dataclasses import dataclass
from typing import Optional

_SHT_NOTE = 7
_SHT_NOBITS = 8
_PT_NOTE = 4
_NT_GNU_BUILD_ID = 3
_SHN_XINDEX = 0xFFFF
_DEBUG_SECTIONS = (b".debug_info", b".zdebug_info")


class NotElf(Exception):
    pass


@dataclass
class ElfInfo:
    build_id: Optional[str]  # lowercase hex, None when the file has none
    has_debug_info: bool


def _notes_build_id(data, endian):
    """Walks a note area; returns the GNU build-id in hex, or None."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(endian + "III", data, pos)
        pos += 12
        name = data[pos : pos + namesz]
        pos += (namesz + 3) & ~3
        desc = data[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        if ntype == _NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU" and desc:
            return desc.hex()
    return None


def read_info(path):
    """Returns the ElfInfo of `path`; raises OSError or NotElf."""
    with open(path, "rb") as f:
        try:
            return _read_info(f)
        except (struct.error, IndexError, ValueError):
            raise NotElf("truncated or malformed ELF headers") from None


def _read_info(f):
    ident = f.read(64)
    if len(ident) < 64 or ident[:4] != b"\x7fELF":
        raise NotElf("not an ELF file")
    is64 = {1: False, 2: True}.get(ident[4])
    endian = {1: "<", 2: ">"}.get(ident[5])
    if is64 is None or endian is None:
        raise NotElf("unknown ELF class or byte order")

    if is64:
        phoff, shoff = struct.unpack_from(endian + "QQ", ident, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(
            endian + "HHHHH", ident, 54)
    else:
        phoff, shoff = struct.unpack_from(endian + "II", ident, 28)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(
            endian + "HHHHH", ident, 42)

    def read_at(offset, size):
        f.seek(offset)
        return f.read(size)

    def section(index):
        raw = read_at(shoff + index * shentsize, shentsize)
        if is64:
            name, stype, _flags, _addr, off, size, link = struct.unpack_from(
                endian + "IIQQQQI", raw)
        else:
            name, stype, _flags, _addr, off, size, link = struct.unpack_from(
                endian + "IIIIIII", raw)
        return name, stype, off, size, link

    build_id = None
    has_debug = False
    if shoff:
        if shnum == 0:  # more than 0xff00 sections: the count is in section 0
            shnum = section(0)[3]
        if shstrndx == _SHN_XINDEX:
            shstrndx = section(0)[4]
        sections = [section(i) for i in range(shnum)]
        _, _, stroff, strsize, _ = sections[shstrndx]
        names = read_at(stroff, strsize)
        for name_off, stype, off, size, _ in sections:
            name = names[name_off : names.find(b"\0", name_off)]
            if stype == _SHT_NOTE and build_id is None:
                build_id = _notes_build_id(read_at(off, size), endian)
            elif name in _DEBUG_SECTIONS and stype != _SHT_NOBITS and size:
                has_debug = True
    elif phoff:
        for i in range(phnum):
            raw = read_at(phoff + i * phentsize, phentsize)
            if is64:
                ptype, _flags, off, _v, _p, filesz = struct.unpack_from(
                    endian + "IIQQQQ", raw)
            else:
                ptype, off, _v, _p, filesz = struct.unpack_from(
                    endian + "IIIII", raw)
            if ptype == _PT_NOTE:
                build_id = _notes_build_id(read_at(off, filesz), endian)
                if build_id:
                    break
    return ElfInfo(build_id=build_id, has_debug_info=has_debug)
