"""gdb script: print every thread's physical frame pcs, for differential tests.

Run as `gdb -p PID -batch -nx -x gdb_pcs.py` (or on a core). Prints two lines per thread:
`THREAD <tid> <pc> <pc> ...`, innermost first, and `NAMES <tid>` then each frame's function
as gdb names it (`??` when it cannot), separated by tabs. Inline frames (they share a pc with their
physical frame) and tail-call frames (gdb reconstructs them from DWARF call-site information;
they are not on the stack) are skipped: what remains are the physical frames.
"""

import gdb

gdb.execute("set backtrace past-main on")
gdb.execute("set backtrace past-entry on")
gdb.execute("set backtrace limit 4096")
for inferior in gdb.inferiors():
    for thread in sorted(inferior.threads(), key=lambda t: t.ptid[1]):
        thread.switch()
        frame = gdb.newest_frame()
        pcs = []
        names = []
        while frame is not None and len(pcs) < 4096:
            if frame.type() not in (gdb.INLINE_FRAME, gdb.TAILCALL_FRAME):
                pcs.append(frame.pc())
                names.append(frame.name() or "??")
            try:
                frame = frame.older()
            except gdb.error:
                break
        print(f"THREAD {thread.ptid[1]} {' '.join(f'0x{pc:x}' for pc in pcs)}", flush=True)
        print(f"NAMES {thread.ptid[1]}\t" + "\t".join(names), flush=True)
