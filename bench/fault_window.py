"""How much of a file one read fault maps: the reason for build.rs's code layout.

    python3 bench/fault_window.py [FILE]   (default: target/release/corrald)

Maps FILE privately, reads one byte in the middle, then one a quarter in,
and counts the pages now present in this process's page tables
(/proc/self/pagemap; only the present bit is read). On the kernel this was
written on, each read maps 16 pages (64 KB: fault-around), or 32 when the
file's page cache holds larger folios (a copy read through once), so a
binary whose running code is spread thinly has all its text resident.
"""
import ctypes
import mmap
import os
import struct
import sys


def present(addr, length):
    with open("/proc/self/pagemap", "rb") as pagemap:
        count = 0
        for offset in range(0, length, mmap.PAGESIZE):
            pagemap.seek((addr + offset) // mmap.PAGESIZE * 8)
            (entry,) = struct.unpack("Q", pagemap.read(8))
            count += entry >> 63
        return count


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "target/release/corrald")
    with open(path, "rb") as f:
        length = os.fstat(f.fileno()).st_size // mmap.PAGESIZE * mmap.PAGESIZE
        # Copy-on-write, so ctypes can take its address; it is only read.
        m = mmap.mmap(f.fileno(), length, flags=mmap.MAP_PRIVATE,
                      prot=mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    _ = m[length // 2 + 100]
    one = present(addr, length)
    _ = m[length // 4 + 100]
    two = present(addr, length)
    print(f"{path}: {length // 1024} KB mapped; pages present after one read: {one}, "
          f"after two: {two} ({one * mmap.PAGESIZE // 1024} KB per fault)")


if __name__ == "__main__":
    main()
